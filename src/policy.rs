//! Give-to-get: whether a state may read other states' reports of a category.
//!
//! Evaluated on every request from the store (never cached past a write): a state is
//! entitled to a category while it has at least `minimum` accepted, non-retracted
//! reports of that category (of either category, with `cross_category`) first accepted
//! within the trailing `window_days` — leaving out a report whose latest version was
//! signed with a key revoked as of that version's acceptance (the store's
//! contributions index, `store::apply::follow_admin`).

use crate::{
    config::{CategoryRule, PolicyConfig},
    country::CountryCode,
    pb,
    report::Category,
    store::{Snapshot, StoreError},
    tlog::entry::PolicyEntry,
};

const DAY: i64 = 86_400;

/// The give-to-get rules of this exchange.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    config: PolicyConfig,
}

/// Where a state stands in one category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub state: CountryCode,
    pub category: Category,
    pub contributed: u64,
    pub required: u64,
    pub window_days: u32,
    pub cross_category: bool,
    /// When access lapses without further contributions; `None` when not entitled.
    pub lapses_at: Option<i64>,
}

impl Standing {
    pub fn entitled(&self) -> bool {
        self.contributed >= self.required
    }

    /// This standing if it entitles the state to read, else the refusal that says why.
    pub fn require(self) -> Result<Standing, Refusal> {
        if self.entitled() {
            Ok(self)
        } else {
            Err(Refusal(self))
        }
    }

    /// "IDN has contributed 0 maritime-movement reports in the last 365 days; 1 is required".
    pub fn explanation(&self) -> String {
        let what = if self.cross_category {
            "reports (of any category)".to_owned()
        } else {
            format!("{} reports", self.category.label())
        };
        let verdict = if self.entitled() {
            format!(
                "{} {} required, so it may read others' {} reports",
                self.required,
                if self.required == 1 { "is" } else { "are" },
                self.category.label()
            )
        } else {
            format!(
                "{} {} required",
                self.required,
                if self.required == 1 { "is" } else { "are" }
            )
        };
        format!(
            "{} has contributed {} {what} in the last {} days; {verdict}",
            self.state, self.contributed, self.window_days
        )
    }
}

/// A read refused for want of contributions: the standing that was found.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.explanation())]
pub struct Refusal(pub Standing);

impl Standing {
    /// The standing as the API reports it.
    pub fn to_pb(&self) -> pb::CategoryStanding {
        pb::CategoryStanding {
            category: self.category.to_pb() as i32,
            contributed: self.contributed,
            required: self.required,
            window_days: self.window_days,
            entitled: self.entitled(),
            lapses_at_unix: self.lapses_at.filter(|t| *t != i64::MAX).unwrap_or(0),
            explanation: self.explanation(),
        }
    }
}

impl Policy {
    pub(crate) fn new(config: PolicyConfig) -> Self {
        Self { config }
    }

    fn rule(&self, category: Category) -> CategoryRule {
        match category {
            Category::SmugglingIncident => self.config.smuggling_incident,
            Category::MaritimeMovement => self.config.maritime_movement,
        }
    }

    /// Where `state` stands in `category` at `now`, from the snapshot: every
    /// contribution in the window is counted (what `MyStanding` and the operator show).
    pub(crate) fn standing(
        &self,
        snapshot: &Snapshot,
        state: CountryCode,
        category: Category,
        now: i64,
    ) -> Result<Standing, StoreError> {
        self.count(snapshot, (state, category, now), None)
    }

    /// Whether `state` may read `category` at `now`: [`Self::standing`], counting no
    /// further than the contributions required. Reads at most `required` rows per
    /// category counted, however much the state has contributed, so a read's check
    /// (and an open stream's re-check after every commit) costs the same for a state
    /// with a hundred thousand contributions as for one with the minimum.
    /// `contributed` is exact when it is below `required`, else `required`; whether
    /// the state is entitled, and when that lapses, are exactly as `standing` finds.
    pub(crate) fn entitlement(
        &self,
        snapshot: &Snapshot,
        state: CountryCode,
        category: Category,
        now: i64,
    ) -> Result<Standing, StoreError> {
        let required = usize::try_from(self.required(category)).unwrap_or(usize::MAX);
        self.count(snapshot, (state, category, now), Some(required))
    }

    fn required(&self, category: Category) -> u64 {
        if self.config.danger_grant_reads_without_contributing {
            0
        } else {
            u64::from(self.rule(category).minimum)
        }
    }

    /// The standing from every contribution in the window (`most`: `None`), or from
    /// the newest `most` of them.
    fn count(
        &self,
        snapshot: &Snapshot,
        (state, category, now): (CountryCode, Category, i64),
        most: Option<usize>,
    ) -> Result<Standing, StoreError> {
        let rule = self.rule(category);
        let window = i64::from(rule.window_days) * DAY;
        let since = now - window;
        let counted: &[Category] = if self.config.cross_category {
            &Category::ALL
        } else {
            std::slice::from_ref(&category)
        };
        let mut times = Vec::new();
        for c in counted {
            let (state, c) = (state.as_str(), c.to_pb() as i32);
            match most {
                None => times.extend(snapshot.contributions(state, c, since)?),
                Some(most) => {
                    times.extend(snapshot.newest_contributions(state, c, since, most)?);
                }
            }
        }
        times.sort_unstable();
        if let Some(most) = most {
            // Of each category's newest `most`, the newest `most` of all.
            times.drain(..times.len().saturating_sub(most));
        }
        let required = self.required(category);
        let contributed = times.len() as u64;
        // With the newest `required` contributions still in the window, access lasts
        // until the oldest of them leaves it.
        let lapses_at = (contributed >= required).then(|| {
            let oldest_needed = times.len()
                - usize::try_from(required)
                    .unwrap_or(usize::MAX)
                    .min(times.len());
            times.get(oldest_needed).map_or(i64::MAX, |t| t + window)
        });
        Ok(Standing {
            state,
            category,
            contributed,
            required,
            window_days: rule.window_days,
            cross_category: self.config.cross_category,
            lapses_at,
        })
    }
}

impl Policy {
    /// The rules as the transparency log states them, in force from `at`.
    pub(crate) fn log_entry(&self, at: i64) -> PolicyEntry {
        PolicyEntry {
            at,
            cross_category: self.config.cross_category,
            rules: Category::ALL
                .iter()
                .map(|c| {
                    let rule = self.rule(*c);
                    (c.label().to_owned(), rule.window_days, rule.minimum)
                })
                .collect(),
        }
    }
}

impl Category {
    /// From the proto enum; `None` for unspecified or unknown values.
    pub fn from_pb(value: i32) -> Option<Self> {
        match pb::Category::try_from(value).ok()? {
            pb::Category::SmugglingIncident => Some(Self::SmugglingIncident),
            pb::Category::MaritimeMovement => Some(Self::MaritimeMovement),
            pb::Category::Unspecified => None,
        }
    }

    /// A request's required category; `Err` says what is wrong with it: unspecified, or a
    /// value the enum does not define.
    pub fn required(value: i32) -> Result<Self, String> {
        Self::from_pb(value).ok_or_else(|| {
            let known = "smuggling incident (1) or maritime movement (2)";
            if value == 0 {
                format!("is required: {known}")
            } else {
                format!("{value} is not a category: {known}")
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{DAY, Policy};
    use crate::{
        config::{CategoryRule, PolicyConfig, StoreConfig},
        country::CountryCode,
        report::Category,
        store::Store,
    };

    const NOW: i64 = 1_800_000_000;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// A read's entitlement, which reads only the newest contributions it needs,
        /// agrees with the full standing: entitled alike, lapsing alike, and counting
        /// alike below what is required.
        #[test]
        fn the_entitlement_agrees_with_the_full_standing(
            smuggling in proptest::collection::vec(0i64..40, 0..30),
            maritime in proptest::collection::vec(0i64..40, 0..30),
            minimum in 1u32..12,
            window_days in 1u32..30,
            cross_category in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&StoreConfig::in_dir(dir.path())).unwrap();
            let days_ago = |days: &[i64]| days.iter().map(|d| NOW - d * DAY).collect::<Vec<_>>();
            let categories = [Category::SmugglingIncident, Category::MaritimeMovement];
            for (category, days) in categories.iter().zip([&smuggling, &maritime]) {
                store
                    .contribute_for_tests("AUS", category.to_pb() as i32, &days_ago(days))
                    .unwrap();
            }
            let rule = CategoryRule { window_days, minimum };
            let policy = Policy::new(PolicyConfig {
                cross_category,
                smuggling_incident: rule,
                maritime_movement: CategoryRule { window_days, minimum: minimum + 1 },
                danger_grant_reads_without_contributing: false,
            });
            let snapshot = store.snapshot().unwrap();
            let aus = CountryCode::parse("AUS").unwrap();
            for category in categories {
                let full = policy.standing(&snapshot, aus, category, NOW).unwrap();
                let read = policy.entitlement(&snapshot, aus, category, NOW).unwrap();
                prop_assert_eq!(read.entitled(), full.entitled());
                prop_assert_eq!(read.lapses_at, full.lapses_at);
                prop_assert_eq!(read.contributed, full.contributed.min(full.required));
                prop_assert_eq!(read.required, full.required);
            }
        }
    }
}
