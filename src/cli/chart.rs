//! Charts of an aggregate (SVG, with plotters; PNG, that SVG rasterised by resvg with the
//! machine's fonts): a time series when the table has a period dimension, bars otherwise.
//! Withheld cells are left out and the chart says so.

use std::path::Path;

use anyhow::{anyhow, bail};
use plotters::prelude::*;
use tidemark::pb;

use super::labels::name_of;

/// Most lines drawn in one time series (the largest, by total).
const MAX_SERIES: usize = 8;
const COLOURS: [RGBColor; MAX_SERIES] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// What the chart plots: the first summed metric, or the median fee.
struct Measure {
    label: String,
    unit: String,
    /// What the chart leaves out (other metrics, other currencies), in words.
    note: Option<String>,
    /// `None`: the first value of a cell; `Some(currency)`: its median fee there.
    fee_currency: Option<String>,
}

/// Why no cell has a value to draw: all withheld, or (fees) none with quartiles in the
/// currency charted.
fn nothing_drawn(response: &pb::AggregateResponse, measure: &Measure) -> anyhow::Error {
    match &measure.fee_currency {
        Some(currency) => anyhow::anyhow!(
            "no cell of the table has {currency} fee quartiles (a cell shows them over at \
             least {} reports stating that currency), so there is nothing to chart: widen the \
             dates or drop a dimension",
            response
                .protection
                .as_ref()
                .map_or(0, |p| p.minimum_reports_for_quantiles)
        ),
        None => anyhow::anyhow!(
            "every cell of the table is withheld (only margins, if any, are shown), so there \
             is nothing to chart"
        ),
    }
}

impl Measure {
    fn of(&self, cell: &pb::Cell) -> Option<f64> {
        match &self.fee_currency {
            #[allow(clippy::cast_precision_loss)]
            None => cell.values.first().map(|v| *v as f64),
            Some(currency) => cell
                .fees
                .iter()
                .find(|f| f.currency == *currency)
                .map(|f| f.median),
        }
    }
}

/// One line of a time series.
struct Series {
    name: String,
    points: Vec<(usize, f64)>,
    total: f64,
}

fn measure(response: &pb::AggregateResponse) -> anyhow::Result<Measure> {
    let summed: Vec<pb::Metric> = response
        .metrics
        .iter()
        .filter_map(|m| pb::Metric::try_from(*m).ok())
        .filter(|m| *m != pb::Metric::FeePerPerson)
        .collect();
    if let Some(first) = summed.first() {
        let label = name_of(Ok::<_, ()>(first.as_str_name()), "METRIC_");
        let unit = if *first == pb::Metric::Reports {
            "number of reports"
        } else {
            "number of people"
        };
        let others: Vec<String> = response
            .metrics
            .iter()
            .filter_map(|m| pb::Metric::try_from(*m).ok())
            .filter(|m| m != first)
            .map(|m| name_of(Ok::<_, ()>(m.as_str_name()), "METRIC_"))
            .collect();
        let note = (!others.is_empty()).then(|| {
            format!(
                "The chart shows {label}, the first metric asked for; {} are in the table \
                 (ask for one first to chart it).",
                others.join(", ")
            )
        });
        return Ok(Measure {
            unit: format!("{label} ({unit})"),
            label,
            note,
            fee_currency: None,
        });
    }
    // The currency most cells state a fee in.
    let mut currencies: Vec<(usize, String)> = Vec::new();
    for f in response.cells.iter().flat_map(|c| &c.fees) {
        match currencies.iter_mut().find(|(_, c)| *c == f.currency) {
            Some((n, _)) => *n += 1,
            None => currencies.push((1, f.currency.clone())),
        }
    }
    currencies.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let (_, currency) = currencies.first().cloned().ok_or_else(|| {
        anyhow!(
            "no cell of the table shows fee quartiles (a cell shows them over at least {} \
                 reports stating one currency), so there is nothing to chart: widen the dates \
                 or drop a dimension",
            response
                .protection
                .as_ref()
                .map_or(0, |p| p.minimum_reports_for_quantiles)
        )
    })?;
    let note = (currencies.len() > 1).then(|| {
        format!(
            "The chart shows fees in {currency}; fees in {} are in the table.",
            currencies[1..]
                .iter()
                .map(|(_, c)| c.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    });
    Ok(Measure {
        label: "median fee per person".to_owned(),
        unit: format!("median fee per person ({currency})"),
        note,
        fee_currency: Some(currency),
    })
}

/// Writes the chart of `response` to `path`.
pub fn write(
    path: &Path,
    request: &pb::AggregateRequest,
    response: &pb::AggregateResponse,
) -> anyhow::Result<()> {
    if response.cells.is_empty() {
        bail!(
            "fewer than {} reports match (perhaps none), so there is nothing to chart",
            response.minimum_reports
        );
    }
    let dims: Vec<pb::Dimension> = response
        .group_by
        .iter()
        .filter_map(|d| pb::Dimension::try_from(*d).ok())
        .collect();
    let names: Vec<String> = dims
        .iter()
        .map(|d| name_of(Ok::<_, ()>(d.as_str_name()), "DIMENSION_"))
        .collect();
    let measure = measure(response)?;
    let filter = request.filter.clone().unwrap_or_default();
    let range = match (filter.from_date.as_str(), filter.to_date.as_str()) {
        ("", "") => "all incident dates".to_owned(),
        (from, "") => format!("incidents from {from}"),
        ("", to) => format!("incidents up to {to}"),
        (from, to) => format!("incidents {from} to {to}"),
    };
    let title = if names.is_empty() {
        format!("{}, {range}", capitalise(&measure.label))
    } else {
        format!(
            "{} by {}, {range}",
            capitalise(&measure.label),
            names.join(" and ")
        )
    };
    let withheld = response.cells.iter().filter(|c| c.suppressed != 0).count();
    let mut footnotes = vec![format!(
        "Cells of fewer than {} reports are not drawn (gaps){}. Source: tidemark aggregate \
         ({}).",
        response.minimum_reports,
        if withheld > 0 {
            format!(", nor {withheld} withheld to protect them")
        } else {
            String::new()
        },
        response.source
    )];
    footnotes.extend(measure.note.clone());
    let period = dims.iter().position(|d| {
        matches!(
            d,
            pb::Dimension::Month | pb::Dimension::Quarter | pb::Dimension::Year
        )
    });
    // Drawn in memory and written only once complete: a chart that cannot be drawn
    // (nothing to show) leaves an existing file as it was.
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1100, 650)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let (body, foot) = root.split_vertically(600);
        for (i, line) in footnotes.iter().enumerate() {
            foot.draw(&Text::new(
                line.clone(),
                (10, 5 + 16 * i32::try_from(i).unwrap_or(0)),
                ("sans-serif", 13).into_font().color(&BLACK.mix(0.7)),
            ))
            .map_err(draw_error)?;
        }
        let (plot, side) = body.split_horizontally(880);
        let legend = if let Some(p) = period {
            time_series(&plot, response, &measure, &title, &names, p)?
        } else {
            bars(&plot, response, &measure, &title, &names)?
        };
        draw_legend(&side, &legend)?;
        root.present().map_err(draw_error)?;
    }
    let bytes = if is_png(path) {
        png_of(&svg)?
    } else {
        svg.into_bytes()
    };
    // Whole or not at all: a refusal says no chart was written, and none is.
    tidemark::files::replace(path, &bytes).map_err(|e| anyhow!("cannot write it: {e}"))?;
    Ok(())
}

fn is_png(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
}

/// The SVG chart as a PNG image of the same size.
fn png_of(svg: &str) -> anyhow::Result<Vec<u8>> {
    use resvg::{tiny_skia, usvg};
    let mut options = usvg::Options::default();
    let fonts = options.fontdb_mut();
    fonts.load_system_fonts();
    // The charts ask for "sans-serif": the first sans-serif family the machine has.
    let sans = fonts
        .faces()
        .flat_map(|f| f.families.iter().map(|(name, _)| name.clone()))
        .find(|name| name.contains("Sans") && !name.contains("Mono"));
    if let Some(family) = sans {
        fonts.set_sans_serif_family(family);
    }
    let tree = usvg::Tree::from_str(svg, &options)
        .map_err(|e| anyhow!("the chart could not be drawn as PNG: {e}"))?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| anyhow!("the chart has no size to draw as PNG"))?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap
        .encode_png()
        .map_err(|e| anyhow!("the chart could not be encoded as PNG: {e}"))
}

/// Refuses a chart file name that does not end in .svg or .png, before anything is asked
/// of the server.
pub fn check_path(path: &Path) -> anyhow::Result<()> {
    let svg = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    if !svg && !is_png(path) {
        usage!(
            "--chart {}: charts are written as SVG or PNG; name the file .svg or .png",
            path.display()
        );
    }
    // Before the query is asked (and, under a privacy budget, paid for).
    if path.is_dir() {
        anyhow::bail!(
            "--chart {}: that is a directory; name a file in it, e.g. {}",
            path.display(),
            path.join("chart.svg").display()
        );
    }
    tidemark::files::can_place(path).map_err(|e| {
        anyhow!(
            "--chart {}: no chart can be written there ({e}); name a file in a directory \
             that exists and that you may write in",
            path.display()
        )
    })
}

fn draw_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e:?}")
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |c| {
        c.to_uppercase().collect::<String>() + chars.as_str()
    })
}

/// The chart's frame: title, margins, room for the axis labels.
fn frame<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    caption: String,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, ("sans-serif", 22))
        .margin(15)
        .margin_right(40)
        .x_label_area_size(70)
        .y_label_area_size(80);
    builder
}

/// Lines over the period dimension: one per combination of the other dimensions.
fn time_series(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    response: &pb::AggregateResponse,
    measure: &Measure,
    title: &str,
    names: &[String],
    period: usize,
) -> anyhow::Result<Vec<(String, RGBColor)>> {
    let interior: Vec<&pb::Cell> = response
        .cells
        .iter()
        .filter(|c| c.keys.iter().all(|k| k != "*"))
        .collect();
    let mut periods: Vec<String> = interior.iter().map(|c| c.keys[period].clone()).collect();
    periods.sort();
    periods.dedup();
    if periods.is_empty() {
        bail!("no cell to chart");
    }
    // Every period from the first to the last keeps its place, reports or not.
    let periods = every_period(&periods);
    let mut series = collect_series(&interior, &periods, period, measure);
    if series.is_empty() {
        return Err(nothing_drawn(response, measure));
    }
    series.sort_by(|a, b| b.total.total_cmp(&a.total));
    let dropped = series.len().saturating_sub(MAX_SERIES);
    series.truncate(MAX_SERIES);
    // Drawn (and coloured) in the order of their names: a state keeps its colour whatever
    // the data.
    series.sort_by(|a, b| a.name.cmp(&b.name));
    let top = series
        .iter()
        .flat_map(|s| s.points.iter().map(|(_, v)| *v))
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.1;
    let caption = if dropped > 0 {
        format!("{title} (the {MAX_SERIES} largest series; {dropped} more not drawn)")
    } else {
        title.to_owned()
    };
    let mut chart = frame(area, caption)
        .build_cartesian_2d(0..periods.len().saturating_sub(1).max(1), 0.0..top)
        .map_err(draw_error)?;
    let labels = periods.clone();
    chart
        .configure_mesh()
        .x_desc(names[period].clone())
        .y_desc(measure.unit.clone())
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_labels(periods.len().min(24))
        .x_label_formatter(&|i| labels.get(*i).cloned().unwrap_or_default())
        .draw()
        .map_err(draw_error)?;
    let mut legend = Vec::new();
    for (
        i,
        Series {
            name, mut points, ..
        },
    ) in series.into_iter().enumerate()
    {
        points.sort_by_key(|(x, _)| *x);
        let colour = COLOURS[i % COLOURS.len()];
        let label = if name.is_empty() {
            measure.label.clone()
        } else {
            name
        };
        chart
            .draw_series(PointSeries::of_element(
                points.clone(),
                3,
                colour.filled(),
                &|c, s, st| Circle::new(c, s, st),
            ))
            .map_err(draw_error)?;
        // A line joins consecutive periods only: a period without a value (withheld,
        // or no reports) is a gap, not a straight line across it.
        for run in points.chunk_by(|a, b| b.0 == a.0 + 1) {
            chart
                .draw_series(LineSeries::new(run.to_vec(), colour.stroke_width(2)))
                .map_err(draw_error)?;
        }
        legend.push((label, colour));
    }
    Ok(legend)
}

/// The legend, beside the plot (never over it): a line of each series' colour and name.
fn draw_legend(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    legend: &[(String, RGBColor)],
) -> anyhow::Result<()> {
    let font = ("sans-serif", 14).into_font();
    for (i, (name, colour)) in legend.iter().enumerate() {
        let y = 60 + 22 * i32::try_from(i).unwrap_or(0);
        area.draw(&PathElement::new(
            vec![(5, y), (30, y)],
            colour.stroke_width(3),
        ))
        .map_err(draw_error)?;
        area.draw(&Text::new(name.clone(), (36, y - 8), font.clone()))
            .map_err(draw_error)?;
    }
    Ok(())
}

/// Every period label from the first of `present` to its last ("2024-11", "2024-12",
/// "2025-01"; "2024-Q4", "2025-Q1"; "2024", "2025"), so that a period without reports
/// keeps its place on the axis. Labels of another shape are kept as they are.
fn every_period(present: &[String]) -> Vec<String> {
    let index = |label: &str| -> Option<(i64, u8)> {
        if let Some((y, q)) = label.split_once("-Q") {
            Some((
                y.parse::<i64>().ok()? * 4 + q.parse::<i64>().ok()? - 1,
                b'q',
            ))
        } else if let Some((y, m)) = label.split_once('-') {
            Some((
                y.parse::<i64>().ok()? * 12 + m.parse::<i64>().ok()? - 1,
                b'm',
            ))
        } else {
            Some((label.parse::<i64>().ok()?, b'y'))
        }
    };
    let (Some(first), Some(last)) = (
        present.first().and_then(|l| index(l)),
        present.last().and_then(|l| index(l)),
    ) else {
        return present.to_vec();
    };
    if first.1 != last.1 || last.0 - first.0 > 600 {
        return present.to_vec();
    }
    (first.0..=last.0)
        .map(|i| match first.1 {
            b'q' => format!("{}-Q{}", i.div_euclid(4), i.rem_euclid(4) + 1),
            b'm' => format!("{}-{:02}", i.div_euclid(12), i.rem_euclid(12) + 1),
            _ => i.to_string(),
        })
        .collect()
}

/// The time series of the interior cells: one per combination of the dimensions other
/// than the period, without withheld cells.
fn collect_series(
    interior: &[&pb::Cell],
    periods: &[String],
    period: usize,
    measure: &Measure,
) -> Vec<Series> {
    // Series: the other dimensions' values.
    let series_of = |c: &pb::Cell| -> String {
        c.keys
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != period)
            .map(|(_, k)| k.as_str())
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let mut series: Vec<Series> = Vec::new();
    for cell in interior {
        let name = series_of(cell);
        let Some(value) = (cell.suppressed == 0).then(|| measure.of(cell)).flatten() else {
            continue;
        };
        let x = periods.binary_search(&cell.keys[period]).unwrap_or(0);
        match series.iter_mut().find(|s| s.name == name) {
            Some(s) => {
                s.points.push((x, value));
                s.total += value;
            }
            None => series.push(Series {
                name,
                points: vec![(x, value)],
                total: value,
            }),
        }
    }
    series
}

/// Bars over the first dimension's values: one bar each (with one dimension), or a group
/// of bars each, one per value of the second dimension (the largest series; margins over
/// any third). Returns the legend.
fn bars(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    response: &pb::AggregateResponse,
    measure: &Measure,
    title: &str,
    names: &[String],
) -> anyhow::Result<Vec<(String, RGBColor)>> {
    let (groups, mut series, values) = bar_values(response, measure, names.len() > 1);
    if values.is_empty() {
        return Err(nothing_drawn(response, measure));
    }
    series.sort_by(|a, b| b.1.total_cmp(&a.1));
    let dropped = series.len().saturating_sub(MAX_SERIES);
    series.truncate(MAX_SERIES);
    let top = values
        .iter()
        .map(|(_, _, v)| *v)
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.1;
    let x_desc = names.first().cloned().unwrap_or_default();
    let caption = if dropped > 0 {
        format!("{title} (the {MAX_SERIES} largest series; {dropped} more not drawn)")
    } else {
        title.to_owned()
    };
    let mut chart = frame(area, caption)
        .build_cartesian_2d(
            (0..groups.len().saturating_sub(1)).into_segmented(),
            0.0..top,
        )
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc(x_desc)
        .y_desc(measure.unit.clone())
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_labels(groups.len().min(40))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                groups.get(*i).cloned().unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .draw()
        .map_err(draw_error)?;
    // Each group's width in pixels, shared by its bars.
    let width = i32::try_from(chart.plotting_area().dim_in_pixel().0).unwrap_or(800);
    let group_px = width / i32::try_from(groups.len().max(1)).unwrap_or(1);
    let slot = ((group_px - 8) / i32::try_from(series.len().max(1)).unwrap_or(1)).max(1);
    let mut legend = Vec::new();
    for (s, (name, _)) in series.iter().enumerate() {
        let colour = COLOURS[s % COLOURS.len()];
        let s = i32::try_from(s).unwrap_or(0);
        let bars: Vec<Rectangle<_>> = values
            .iter()
            .filter(|(_, one, _)| one == name)
            .filter_map(|(group, _, v)| {
                let i = groups.iter().position(|g| g == group)?;
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), *v),
                    ],
                    colour.filled(),
                );
                let left = 4 + s * slot;
                let right = (group_px - left - slot).max(0);
                bar.set_margin(
                    0,
                    0,
                    u32::try_from(left).unwrap_or(0),
                    u32::try_from(right).unwrap_or(0),
                );
                Some(bar)
            })
            .collect();
        chart.draw_series(bars).map_err(draw_error)?;
        legend.push((
            if name.is_empty() {
                measure.label.clone()
            } else {
                name.clone()
            },
            colour,
        ));
    }
    Ok(legend)
}

/// The groups (first dimension's values, sorted), the series (second dimension's values,
/// "" with one dimension) with their totals, and each shown (group, series, value).
#[allow(clippy::type_complexity)]
fn bar_values(
    response: &pb::AggregateResponse,
    measure: &Measure,
    grouped: bool,
) -> (Vec<String>, Vec<(String, f64)>, Vec<(String, String, f64)>) {
    let mut groups: Vec<String> = Vec::new();
    let mut series: Vec<(String, f64)> = Vec::new();
    let mut values: Vec<(String, String, f64)> = Vec::new();
    for c in response.cells.iter().filter(|c| c.suppressed == 0) {
        let (group, one) = match c.keys.as_slice() {
            [] => ("all".to_owned(), String::new()),
            [g] if g != "*" => (g.clone(), String::new()),
            [g, s, rest @ ..]
                if grouped && g != "*" && s != "*" && rest.iter().all(|k| k == "*") =>
            {
                (g.clone(), s.clone())
            }
            _ => continue,
        };
        let Some(v) = measure.of(c) else { continue };
        if !groups.contains(&group) {
            groups.push(group.clone());
        }
        match series.iter_mut().find(|(n, _)| *n == one) {
            Some((_, total)) => *total += v,
            None => series.push((one.clone(), v)),
        }
        values.push((group, one, v));
    }
    groups.sort();
    (groups, series, values)
}
