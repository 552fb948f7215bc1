//! Schemas of the domain's wire types, which live in `aiprod-domain` and know nothing of
//! OpenAPI. Each enum's values are read from its own wire names (`names()`, strum's spelling)
//! when the document is built, so a variant added to the domain is in the document at once and
//! the schema can never list a name the API does not send or take.

use std::borrow::Cow;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::view::StageState;

/// A string schema that takes exactly `names`.
fn one_of(names: impl Iterator<Item = &'static str>, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(names.collect::<Vec<_>>()))
        .description(Some(description))
        .into()
}

/// Declares a schema named after a domain enum, with that enum's wire names as its values.
macro_rules! wire_schema {
    ($($name:ident: $description:literal;)+) => {
        $(
            #[doc = $description]
            pub(crate) struct $name;

            impl PartialSchema for $name {
                fn schema() -> RefOr<Schema> {
                    one_of(aiprod_domain::$name::names(), $description)
                }
            }

            impl ToSchema for $name {
                fn name() -> Cow<'static, str> {
                    Cow::Borrowed(stringify!($name))
                }
            }
        )+
    };
}

wire_schema! {
    JobStatus: "Where a job is in its life.";
    Stage: "A stage of the pipeline, in pipeline order.";
    BackendName: "A video backend.";
    BackendChoice: "A backend asked for by name, or `auto`: the router chooses.";
    Priority: "How urgently a job should run.";
    OverBudget: "What a job does when the budget does not cover it: `wait` for money, or `fail` at once.";
    RenderState: "Where one render try stands.";
    FailureClass: "How a render try failed.";
    Scope: "What an API key may do.";
    AlertRule: "The rule an alert fired for.";
    Severity: "How bad an alert is.";
}

/// An amount of US dollars as a decimal string, never a JSON number a client might read into a
/// float: at least two decimals, at most six (money is counted in micro-dollars).
pub(crate) struct Money;

impl PartialSchema for Money {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            // A limit lowered below what is reserved leaves a negative remainder.
            .pattern(Some(r"^-?[0-9]+\.[0-9]{2,6}$"))
            .description(Some(
                "US dollars as a decimal string with 2 to 6 decimals, such as \"12.50\"",
            ))
            .examples(["12.50"])
            .into()
    }
}

impl ToSchema for Money {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Money")
    }
}

/// An amount a client sends: what `Money`'s parser takes, in its plain form (the parser also
/// reads a sign, a bare `.5` or a JSON number; the document shows the form to use).
pub(crate) struct MoneyInput;

impl PartialSchema for MoneyInput {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^[0-9]{1,12}(\.[0-9]{1,6})?$"))
            .description(Some(
                "US dollars as a decimal string, at most 6 decimals, such as \"150.00\"",
            ))
            .examples(["150.00"])
            .into()
    }
}

impl ToSchema for MoneyInput {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("MoneyInput")
    }
}

impl PartialSchema for StageState {
    fn schema() -> RefOr<Schema> {
        let names = std::iter::once("pending").chain(aiprod_domain::StageStatus::names());
        one_of(
            names,
            "`pending` until the stage begins, then its checkpoint's status.",
        )
    }
}

impl ToSchema for StageState {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("StageState")
    }
}
