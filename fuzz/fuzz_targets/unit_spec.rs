//! The unit spec parser (`shoalctl submit`, `POST /api/v1/units`): TOML or
//! JSON as the text's first byte tells. Parsing never panics, and a parsed
//! unit survives a JSON round trip unchanged.

#![no_main]

use api::fleet::{parse_unit, Unit, UnitFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let format = UnitFormat::guess(text);
    for default_name in [None, Some("fuzzed")] {
        let Ok(unit) = parse_unit(text, format, default_name) else {
            continue;
        };
        let json = serde_json::to_string(&unit).expect("a parsed unit serializes");
        let back: Unit = serde_json::from_str(&json).expect("a serialized unit parses");
        assert_eq!(back, unit, "JSON round trip changed the unit");
    }
});
