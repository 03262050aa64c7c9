//! etcd key path and query parsing: the first line of the input is the key
//! (as the router hands it over, percent-decoded), the second the query
//! string, the rest the form body; the method comes from the first byte.
//! Parsing never panics, and a parsed key is clean.

#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use server::http::form::Form;
use server::http::keys::KeyRequest;
use server::keyspace::path;

/// Panics unless `key` is in the shape `path::clean` promises.
fn assert_clean(key: &str) {
    assert!(key.starts_with('/'), "{key:?} is not absolute");
    assert!(!key.contains("//"), "{key:?} has an empty segment");
    assert!(key == "/" || !key.ends_with('/'), "{key:?} ends with '/'");
    assert!(
        key.split('/').all(|s| s != "." && s != ".."),
        "{key:?} has a '.' or '..' segment"
    );
    assert_eq!(path::clean(key), key, "cleaning is not idempotent");
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let method = match first % 4 {
        0 => Method::GET,
        1 => Method::PUT,
        2 => Method::POST,
        _ => Method::DELETE,
    };
    let mut parts = rest.splitn(3, |b| *b == b'\n');
    let key = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let query = parts.next().map(String::from_utf8_lossy);
    let body = parts.next().unwrap_or_default();

    assert_clean(&path::clean(&key));
    let Ok(form) = Form::parse(body, query.as_deref()) else {
        return;
    };
    if let Ok(req) = KeyRequest::parse(&method, &key, &form) {
        assert_clean(&req.key);
        assert!(req.key.len() <= server::http::keys::MAX_KEY_BYTES);
        assert!(!req.wait || method == Method::GET, "wait on {method}");
        let _ = req.to_op(&method);
    }
});
