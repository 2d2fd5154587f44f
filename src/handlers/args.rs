//! Typed payloads: a [`JobArgs`] type names its job kind and is the payload's
//! shape, so a handler gets a decoded value instead of raw JSON, and the
//! decode that runs the job is the decode that validates a dry run.

use std::future::Future;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Handler, HandlerError, HandlerFuture, HandlerResult, JobContext};
use crate::error::{Error, Result};
use crate::jobs::NewJob;

/// A job's typed payload. `KIND` is the job type (and its feature flag).
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Resize { image: String, width: u32 }
///
/// impl opsrunner::handlers::JobArgs for Resize {
///     const KIND: &'static str = "resize";
///     fn check(&self) -> Result<(), String> {
///         if self.width == 0 { return Err("width must be positive".into()) }
///         Ok(())
///     }
/// }
/// ```
pub trait JobArgs: Serialize + DeserializeOwned + Send + 'static {
    /// The job type, `[a-z][a-z0-9_.-]{0,63}`.
    const KIND: &'static str;

    /// A payload to show in error messages, e.g. `{"ms": 250}`; empty for
    /// none.
    const EXAMPLE: &'static str = "";

    /// Bounds serde cannot express; an `Err` fails the job permanently.
    fn check(&self) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// Decodes and checks a payload as `A`. Only a JSON object is meant: serde
/// would also take `[250]` for a one-field struct.
pub(crate) fn decode<A: JobArgs>(payload: &Value) -> std::result::Result<A, HandlerError> {
    let like = if A::EXAMPLE.is_empty() {
        String::new()
    } else {
        format!(" like {}", A::EXAMPLE)
    };
    if !payload.is_object() {
        return Err(HandlerError::Permanent(format!(
            "{} expects a JSON object{like}",
            A::KIND
        )));
    }
    let args = A::deserialize(payload).map_err(|e| {
        HandlerError::Permanent(format!("{} expects a payload{like}: {e}", A::KIND))
    })?;
    args.check().map_err(HandlerError::Permanent)?;
    Ok(args)
}

/// The handler `Registry::register_args` builds around a typed function.
pub(crate) struct Typed<A, F> {
    f: F,
    _args: PhantomData<fn() -> A>,
}

impl<A, F> Typed<A, F> {
    pub(crate) fn new(f: F) -> Self {
        Self {
            f,
            _args: PhantomData,
        }
    }
}

impl<A, F, Fut> Handler for Typed<A, F>
where
    A: JobArgs,
    F: Fn(A, JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn run(&self, job: JobContext) -> HandlerFuture {
        match decode::<A>(&job.payload) {
            Ok(args) => Box::pin((self.f)(args, job)),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn validate(&self, payload: &Value) -> std::result::Result<(), HandlerError> {
        decode::<A>(payload).map(|_| ())
    }
}

impl NewJob {
    /// A job of kind `A::KIND` whose payload is `args`, serialized.
    pub fn from_args<A: JobArgs>(args: &A) -> Result<Self> {
        let payload = serde_json::to_value(args)
            .map_err(|e| Error::Invalid(format!("the job's arguments do not serialize: {e}")))?;
        Ok(Self::new(A::KIND, payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Serialize, Deserialize)]
    struct Greet {
        name: String,
    }

    impl JobArgs for Greet {
        const KIND: &'static str = "greet";
        fn check(&self) -> std::result::Result<(), String> {
            if self.name.is_empty() {
                return Err("name must not be empty".into());
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_typed_handler_gets_the_decoded_payload_and_bad_ones_fail_permanently() {
        let mut r = crate::Registry::new();
        r.register_args(|g: Greet, _ctx| async move { Ok(json!({ "hello": g.name })) });
        let h = r.get("greet").expect("registered under A::KIND");
        let ok = h
            .run(JobContext::new("greet", json!({"name": "ops"})))
            .await;
        assert_eq!(ok, Ok(json!({"hello": "ops"})));
        for bad in [
            json!({"name": 5}),
            json!({"name": ""}),
            json!(["ops"]),
            json!({}),
        ] {
            assert!(
                matches!(h.validate(&bad), Err(HandlerError::Permanent(_))),
                "{bad}"
            );
            let r = h.run(JobContext::new("greet", bad.clone())).await;
            assert!(matches!(r, Err(HandlerError::Permanent(_))), "{bad}");
        }
        let job = NewJob::from_args(&Greet { name: "x".into() }).unwrap();
        assert_eq!(
            (job.job_type.as_str(), job.payload),
            ("greet", json!({"name": "x"}))
        );
    }
}
