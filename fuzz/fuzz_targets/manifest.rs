//! The update payload manifest: offers as the agent receives them (JSON,
//! `api::updates::Offer`) and the signed manifest message it checks them
//! against. The input is a JSON array of offers; the first is signed with a
//! fixed key, and every offer must verify under that signature exactly when
//! its version, size and SHA-256 are the first one's (no two manifests
//! collide); only invalid fields are refused a signature. Each offer's own
//! signature is checked too; nothing panics.

#![no_main]

use std::sync::OnceLock;

use api::updates::{
    generate_keypair, public_key, sign, valid_sha256, valid_version, verify_with, Offer, PublicKey,
};
use libfuzzer_sys::fuzz_target;

/// A key pair made once per process: (secret PEM, public key).
fn keys() -> &'static (String, PublicKey) {
    static KEYS: OnceLock<(String, PublicKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let (secret, public) = generate_keypair().expect("key pair");
        (secret, public_key(&public).expect("public key"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(offers) = serde_json::from_slice::<Vec<Offer>>(data) else {
        return;
    };
    let Some(first) = offers.first() else {
        return;
    };
    let (secret, public) = keys();
    let Ok(signature) = sign(secret, &first.version, first.size, &first.sha256) else {
        // Only invalid fields are refused a signature.
        assert!(!valid_version(&first.version) || !valid_sha256(&first.sha256));
        return;
    };
    for offer in &offers {
        let same = (&offer.version, offer.size, &offer.sha256)
            == (&first.version, first.size, &first.sha256);
        let verified = verify_with(
            public,
            &offer.version,
            offer.size,
            &offer.sha256,
            &signature,
        )
        .is_ok();
        assert_eq!(
            verified, same,
            "{offer:?} verified under the signature of {first:?}"
        );
        let _ = verify_with(
            public,
            &offer.version,
            offer.size,
            &offer.sha256,
            &offer.signature,
        );
    }
});
