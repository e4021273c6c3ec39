//! The cheapest possible plugin: one hook that continues. Benches measure a hook call with it.

use switchyard_sdk::{Action, Plugin, Request};

pub struct Noop;

impl Plugin for Noop {
    type Config = serde::de::IgnoredAny;

    fn new(_config: Self::Config) -> Result<Self, String> {
        Ok(Noop)
    }

    fn on_request(&self, _req: &mut Request) -> Action {
        Action::Continue
    }
}

switchyard_sdk::export_plugin!(Noop);
