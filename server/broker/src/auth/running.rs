//! Rights of what runs without a connection: a processor's pipeline reads and writes with the
//! rights of the principal that deployed its active version, checked again as it runs, so a
//! right revoked (or a user removed) after the deploy stops the processor too.

use silt_wire::auth::decide;
use silt_wire::Operation;

use super::audit::{Event, Outcome};
use super::rights::topic;
use super::Auth;

impl Auth {
    /// Whether `deployer` may still read `input` and write `output` for processor `name`;
    /// the refusal, audited, says which right is gone. A processor deployed without a
    /// principal (authentication off, or before brokers recorded one) is not checked.
    pub fn may_run(
        &self,
        name: &str,
        deployer: Option<&str>,
        input: &str,
        output: &str,
    ) -> Result<(), String> {
        let Some(deployer) = deployer.filter(|_| self.config.enabled) else {
            return Ok(());
        };
        let missing = {
            let state = self.state.read().expect("auth lock");
            [(Operation::Consume, topic(input)), (Operation::Produce, topic(output))]
                .into_iter()
                .find(|(op, resource)| !decide(&state.entries, deployer, *op, resource))
        };
        let Some((op, resource)) = missing else {
            return Ok(());
        };
        let why = format!("its deployer {deployer} may no longer {op} {resource}");
        self.audit.record(Event {
            time_ms: crate::clock::now_ms(),
            principal: deployer.to_string(),
            source: None,
            operation: "run-processor".into(),
            resource: format!("processor:{name}"),
            outcome: Outcome::Denied,
            detail: why.clone(),
        });
        Err(why)
    }
}
