//! What routing reads of the money left today. The daily budget ledger fills this in; until it
//! exists, no limit applies.

use aiprod_shared::Money;
use async_trait::async_trait;

/// The budget as routing sees it.
#[async_trait]
pub trait BudgetView: Send + Sync + 'static {
    /// Money left to spend now; `None` when no limit applies.
    async fn remaining(&self) -> Result<Option<Money>, String>;
}

/// No limit at all.
pub struct Unlimited;

#[async_trait]
impl BudgetView for Unlimited {
    async fn remaining(&self) -> Result<Option<Money>, String> {
        Ok(None)
    }
}

/// A fixed amount left, for tests and for operators who cap a worker by hand.
pub struct Fixed(pub Money);

#[async_trait]
impl BudgetView for Fixed {
    async fn remaining(&self) -> Result<Option<Money>, String> {
        Ok(Some(self.0))
    }
}
