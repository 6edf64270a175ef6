//! Privacy budgets: how much of its yearly zCDP budget each state analyst has spent, in
//! micro-ρ (integers, so that charges and refunds add up exactly). A charge is one job of
//! the writer's batch: read, check against the limit, write, in one transaction.

use redb::ReadableTable;

use super::{StoreError, apply::AppendError};

/// A change to one principal's budget of one year.
#[derive(Debug, Clone)]
pub(crate) struct BudgetCharge {
    /// The analyst's SPIFFE ID.
    pub principal: String,
    /// The calendar year (UTC) the budget is for.
    pub year: i32,
    /// Micro-ρ to charge (> 0) or refund (< 0).
    pub amount: i64,
    /// The most the principal may spend in the year, in micro-ρ.
    pub limit: u64,
}

/// Why a charge was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BudgetError {
    #[error(
        "the privacy budget for {year} is spent: rho {} of {} used, and an aggregate costs \
         {}; it renews on 1 January (UTC), or an operator can raise \
         analytics.privacy_budget.rho_per_year",
        rho(*spent), rho(*limit), rho(*asked)
    )]
    /// The charge would exceed the limit.
    Spent {
        year: i32,
        spent: u64,
        limit: u64,
        asked: u64,
    },
    #[error(transparent)]
    /// The store failed.
    Store(#[from] AppendError),
}

/// `micro` micro-ρ as ρ, as the configuration writes it (`0.05`).
#[allow(clippy::cast_precision_loss)]
fn rho(micro: u64) -> String {
    format!("{}", micro as f64 / 1e6)
}

/// Applies `charge` in the batch's transaction: the micro-ρ spent after it, or the refusal.
pub(super) fn apply(
    budgets: &mut redb::Table<'_, (&'static str, i32), u64>,
    charge: &BudgetCharge,
) -> Result<Result<u64, BudgetError>, StoreError> {
    let key = (charge.principal.as_str(), charge.year);
    let spent = budgets.get(key)?.map_or(0, |v| v.value());
    let after = spent.saturating_add_signed(charge.amount);
    if charge.amount > 0 && after > charge.limit {
        return Ok(Err(BudgetError::Spent {
            year: charge.year,
            spent,
            limit: charge.limit,
            asked: charge.amount.unsigned_abs(),
        }));
    }
    budgets.insert(key, after)?;
    Ok(Ok(after))
}

/// Micro-ρ `principal` has spent in `year`.
pub(super) fn spent(
    budgets: &impl ReadableTable<(&'static str, i32), u64>,
    principal: &str,
    year: i32,
) -> Result<u64, StoreError> {
    Ok(budgets.get((principal, year))?.map_or(0, |v| v.value()))
}
