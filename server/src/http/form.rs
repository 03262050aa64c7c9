//! etcd v2 request parameters: the query string and form body, parsed as Go's
//! `ParseForm` does (body values first), strictly UTF-8.

use percent_encoding::percent_decode_str;

use crate::keyspace::{ErrorCode, KeyError};

/// The merged parameters of one request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

/// A request-level etcd error (index 0, as etcd reports parse errors).
pub fn bad(code: ErrorCode, cause: &str) -> KeyError {
    KeyError::new(code, cause, 0)
}

impl Form {
    /// Parses the body (if form-encoded) then the query string.
    pub fn parse(body: &[u8], query: Option<&str>) -> Result<Self, KeyError> {
        let mut pairs = Vec::new();
        if !body.is_empty() {
            let text = std::str::from_utf8(body)
                .map_err(|_| bad(ErrorCode::InvalidForm, "body is not UTF-8"))?;
            decode_into(text, &mut pairs)?;
        }
        if let Some(q) = query {
            decode_into(q, &mut pairs)?;
        }
        Ok(Self { pairs })
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// True when `key` was given at all (even empty).
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// A boolean in Go's `strconv.ParseBool` spelling; absent is false.
    pub fn bool(&self, key: &str, cause: &str) -> Result<bool, KeyError> {
        match self.get(key) {
            None => Ok(false),
            Some(v) => parse_bool(v).ok_or_else(|| bad(ErrorCode::InvalidField, cause)),
        }
    }

    /// An unsigned integer; absent is `None`.
    pub fn uint(&self, key: &str, code: ErrorCode, cause: &str) -> Result<Option<u64>, KeyError> {
        self.get(key)
            .map(|v| v.parse::<u64>().map_err(|_| bad(code, cause)))
            .transpose()
    }
}

fn decode_into(text: &str, pairs: &mut Vec<(String, String)>) -> Result<(), KeyError> {
    for part in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        pairs.push((decode(k)?, decode(v)?));
    }
    Ok(())
}

/// Percent-decodes one form component (`+` is a space); invalid UTF-8 is refused.
pub fn decode(s: &str) -> Result<String, KeyError> {
    let spaced = s.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| bad(ErrorCode::InvalidForm, "invalid UTF-8 in the request"))
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_comes_before_query() -> Result<(), KeyError> {
        let f = Form::parse(b"value=a+b&ttl=5", Some("value=q&recursive=true"))?;
        assert_eq!(f.get("value"), Some("a b"));
        assert_eq!(f.get("recursive"), Some("true"));
        assert_eq!(f.uint("ttl", ErrorCode::TtlNaN, "x")?, Some(5));
        Ok(())
    }

    #[test]
    fn refuses_bad_input() {
        assert!(Form::parse(b"value=%ff", None).is_err(), "invalid UTF-8");
        assert!(Form::parse(&[0xff], None).is_err());
        let f = Form::parse(b"ttl=abc&dir=maybe", None).unwrap_or_default();
        assert_eq!(
            f.uint("ttl", ErrorCode::TtlNaN, "t")
                .err()
                .map(|e| e.code.code()),
            Some(202)
        );
        assert_eq!(f.bool("dir", "d").err().map(|e| e.code.code()), Some(209));
        assert_eq!(parse_bool("T"), Some(true));
        assert_eq!(parse_bool("yes"), None);
    }
}
