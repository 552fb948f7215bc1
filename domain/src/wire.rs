//! Wire names. Every enum of the domain is declared with `wire_enum!`, and each variant has one
//! name, from one place: strum's `snake_case` spelling of it. JSON (serde, through
//! `Display`/`FromStr`), the PostgreSQL enum types (sqlx, through `pg_enum!`), logs, metrics
//! labels and error messages all read that same name; nothing keeps a list of them by hand. The
//! store's tests check that each PostgreSQL enum type has exactly these labels, in this order.

/// Declares a wire enum: its variants' snake_case names (strum) are its only spelling, for
/// `Display`/`FromStr`, serde, `as_str`/`names`/`one_of`, and (after `in`, with the `sqlx`
/// feature) the PostgreSQL enum type it maps onto. Every enum of the domain is declared so.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident $(in $pg:literal)? {
            $( $(#[$vmeta:meta])* $variant:ident ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Clone,
            Copy,
            Debug,
            PartialEq,
            Eq,
            Hash,
            PartialOrd,
            Ord,
            strum::Display,
            strum::EnumString,
            strum::IntoStaticStr,
            strum::VariantArray,
            serde_with::SerializeDisplay,
            serde_with::DeserializeFromStr,
        )]
        #[strum(serialize_all = "snake_case")]
        $vis enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        $crate::wire::wire_name!($name);
        $( $crate::wire::pg_enum!($name, $pg); )?
    };
}

pub(crate) use wire_enum;

/// Gives a wire enum its `as_str`, `names` and `one_of`, from strum's names.
macro_rules! wire_name {
    ($ty:ty) => {
        impl $ty {
            /// The wire name: JSON, SQL, logs and messages.
            pub fn as_str(self) -> &'static str {
                self.into()
            }

            /// Every wire name, in declaration order.
            pub fn names() -> impl Iterator<Item = &'static str> {
                <Self as strum::VariantArray>::VARIANTS
                    .iter()
                    .map(|v| v.as_str())
            }

            /// Every wire name, in declaration order, joined for a message: `a, b, c`.
            pub fn one_of() -> String {
                Self::names().collect::<Vec<_>>().join(", ")
            }
        }
    };
}

/// With the `sqlx` feature, maps a type that has `as_str`, `one_of` and `FromStr` onto the
/// PostgreSQL enum type `$pg`, through those same names.
macro_rules! pg_enum {
    ($ty:ty, $pg:literal) => {
        #[cfg(feature = "sqlx")]
        impl sqlx::Type<sqlx::Postgres> for $ty {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                sqlx::postgres::PgTypeInfo::with_name($pg)
            }
        }

        #[cfg(feature = "sqlx")]
        impl sqlx::postgres::PgHasArrayType for $ty {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                sqlx::postgres::PgTypeInfo::array_of($pg)
            }
        }

        #[cfg(feature = "sqlx")]
        impl sqlx::Encode<'_, sqlx::Postgres> for $ty {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        #[cfg(feature = "sqlx")]
        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $ty {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let name = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                name.parse().map_err(|_| {
                    format!(
                        "`{name}` is not a {} (expected one of {})",
                        $pg,
                        <$ty>::one_of()
                    )
                    .into()
                })
            }
        }
    };
}

pub(crate) use pg_enum;
pub(crate) use wire_name;

#[cfg(test)]
mod tests {
    use strum::VariantArray;

    use crate::{BackendName, JobStatus, Stage};

    #[test]
    fn json_and_display_use_the_same_snake_case_name() {
        for s in JobStatus::VARIANTS {
            let json = serde_json::to_value(s).expect("serialises");
            assert_eq!(json, serde_json::Value::String(s.as_str().to_owned()));
            assert_eq!(s.to_string(), s.as_str());
            let back: JobStatus = serde_json::from_value(json).expect("reads back");
            assert_eq!(back, *s);
        }
        assert_eq!(JobStatus::WaitingBudget.as_str(), "waiting_budget");
        assert_eq!(Stage::QaTechnical.as_str(), "qa_technical");
        assert_eq!(BackendName::Veo3.as_str(), "veo3");
        assert_eq!(
            JobStatus::one_of(),
            "queued, running, waiting_budget, succeeded, failed, canceled"
        );
    }
}
