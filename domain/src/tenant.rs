//! Tenants and what their keys may do: `TenantId`, and the `Scope` of an API key.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::wire::wire_enum;

/// A tenant's identifier (a UUIDv7), a type of its own so it is never taken for a job's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
pub struct TenantId(Uuid);

impl TenantId {
    /// The tenant the migration that introduced tenants gave every job accepted before it
    /// (`default`); tests and single-tenant setups use it too.
    pub const DEFAULT: TenantId =
        TenantId(Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0000_0001));

    /// A new id.
    pub fn new() -> TenantId {
        TenantId(Uuid::now_v7())
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for TenantId {
    fn default() -> Self {
        TenantId::new()
    }
}

impl From<Uuid> for TenantId {
    fn from(u: Uuid) -> TenantId {
        TenantId(u)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for TenantId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<TenantId, uuid::Error> {
        s.parse().map(TenantId)
    }
}

wire_enum! {
    /// What an API key may do. A key holds one or more.
    pub enum Scope in "api_scope" {
        /// Submit and cancel jobs: the scope that spends money.
        #[strum(serialize = "jobs:write")]
        JobsWrite,
        /// Read jobs.
        #[strum(serialize = "jobs:read")]
        JobsRead,
        /// The fleet's admin endpoints: budget, alerts, tenants, keys.
        Admin,
    }
}

#[cfg(test)]
mod tests {
    use super::{Scope, TenantId};

    #[test]
    fn scopes_have_their_wire_names() {
        assert_eq!(Scope::JobsWrite.as_str(), "jobs:write");
        assert_eq!(
            "jobs:read".parse::<Scope>().expect("a scope"),
            Scope::JobsRead
        );
        assert_eq!(Scope::one_of(), "jobs:write, jobs:read, admin");
    }

    #[test]
    fn the_default_tenant_is_the_migrations_one() {
        assert_eq!(
            TenantId::DEFAULT.to_string(),
            "00000000-0000-7000-8000-000000000001"
        );
    }
}
