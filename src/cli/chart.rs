//! Charts of an aggregate (SVG, with plotters): a time series when the table has a period
//! dimension, bars otherwise. Withheld cells are left out and the chart says so.

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
    /// `None`: the first value of a cell; `Some(currency)`: its median fee there.
    fee_currency: Option<String>,
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
        return Ok(Measure {
            unit: format!("{label} ({unit})"),
            label,
            fee_currency: None,
        });
    }
    let currency = response
        .cells
        .iter()
        .find_map(|c| c.fees.first().map(|f| f.currency.clone()))
        .ok_or_else(|| anyhow!("no cell states a fee, so there is nothing to chart"))?;
    Ok(Measure {
        label: "median fee per person".to_owned(),
        unit: format!("median fee per person ({currency})"),
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
        bail!("no reports match, so there is nothing to chart");
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
    let footnote = format!(
        "Withheld cells ({withheld}) are not drawn: fewer than {} reports, or protecting such a \
         cell. Source: tidemark aggregate ({}).",
        response.minimum_reports, response.source
    );
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
        let (body, foot) = root.split_vertically(620);
        foot.draw(&Text::new(
            footnote,
            (10, 5),
            ("sans-serif", 13).into_font().color(&BLACK.mix(0.7)),
        ))
        .map_err(draw_error)?;
        match period {
            Some(p) => time_series(&body, response, &measure, &title, &names, p)?,
            None => bars(&body, response, &measure, &title, &names)?,
        }
        root.present().map_err(draw_error)?;
    }
    std::fs::write(path, svg)?;
    Ok(())
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
) -> anyhow::Result<()> {
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
    let mut series = collect_series(&interior, &periods, period, measure);
    if series.is_empty() {
        bail!("every cell is withheld, so there is nothing to chart");
    }
    series.sort_by(|a, b| b.total.total_cmp(&a.total));
    let dropped = series.len().saturating_sub(MAX_SERIES);
    series.truncate(MAX_SERIES);
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
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(draw_error)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(draw_error)?;
    Ok(())
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

/// Bars over the first dimension's values (the margins over any others).
fn bars(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    response: &pb::AggregateResponse,
    measure: &Measure,
    title: &str,
    names: &[String],
) -> anyhow::Result<()> {
    let shown: Vec<(String, f64)> = response
        .cells
        .iter()
        .filter(|c| match c.keys.split_first() {
            Some((first, rest)) => first != "*" && rest.iter().all(|k| k == "*"),
            None => true,
        })
        .filter(|c| c.suppressed == 0)
        .filter_map(|c| {
            let label = c.keys.first().cloned().unwrap_or_else(|| "all".to_owned());
            Some((label, measure.of(c)?))
        })
        .collect();
    if shown.is_empty() {
        bail!("every cell is withheld, so there is nothing to chart");
    }
    let top = shown.iter().map(|(_, v)| *v).fold(0.0, f64::max).max(1.0) * 1.1;
    let x_desc = names.first().cloned().unwrap_or_default();
    let caption = if names.len() > 1 {
        format!("{title} (totals by {x_desc})")
    } else {
        title.to_owned()
    };
    let mut chart = frame(area, caption)
        .build_cartesian_2d(
            (0..shown.len().saturating_sub(1)).into_segmented(),
            0.0..top,
        )
        .map_err(draw_error)?;
    let labels: Vec<String> = shown.iter().map(|(l, _)| l.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc(x_desc)
        .y_desc(measure.unit.clone())
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_labels(shown.len().min(40))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                labels.get(*i).cloned().unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .draw()
        .map_err(draw_error)?;
    let colour = COLOURS[0];
    chart
        .draw_series(shown.iter().enumerate().map(|(i, (_, v))| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), *v),
                ],
                colour.filled(),
            );
            bar.set_margin(0, 0, 4, 4);
            bar
        }))
        .map_err(draw_error)?
        .label(measure.label.clone())
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], colour.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(draw_error)?;
    Ok(())
}
