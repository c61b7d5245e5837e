//! [`EvidenceProfile`] → [`CompiledConfig`]: the built-in defaults with
//! every knob the profile set stored over them. Infallible: validation
//! already judged each value against its knob table row, in the row's unit.

use super::schema::EvidenceProfile;
use crate::wire::config::CompiledConfig;

/// Compiles a validated profile. Every knob lands in exactly one
/// `CompiledConfig` field, which maps one-to-one onto `tapio_config`.
pub fn compile(p: &EvidenceProfile) -> CompiledConfig {
    let mut c = CompiledConfig {
        profile: p.name.clone(),
        ..CompiledConfig::default()
    };
    for (knob, value) in &p.knobs {
        knob.set(&mut c, value.clone());
    }
    c
}
