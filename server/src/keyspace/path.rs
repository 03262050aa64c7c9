//! Key paths: cleaning them as etcd does and asking about their shape.

/// Cleans a key the way etcd v2 does (`path.Clean(path.Join("/", key))`):
/// one leading slash, no trailing slash, no empty, `.` or `..` components.
pub fn clean(key: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in key.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The parent directory of a cleaned key; the root is its own parent.
pub fn parent(key: &str) -> &str {
    match key.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &key[..i],
    }
}

/// The last component of a cleaned key.
pub fn base(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or("")
}

/// True for the root key.
pub fn is_root(key: &str) -> bool {
    key == "/"
}

/// True when the key's own name starts with `_`: hidden from directory listings.
pub fn is_hidden(key: &str) -> bool {
    base(key).starts_with('_')
}

/// The prefix every descendant of `dir` starts with.
pub fn child_prefix(dir: &str) -> String {
    if is_root(dir) {
        "/".to_owned()
    } else {
        format!("{dir}/")
    }
}

/// True when `key` is `dir` itself or lies under it.
pub fn is_within(key: &str, dir: &str) -> bool {
    key == dir || key.starts_with(&child_prefix(dir))
}

/// Every proper ancestor directory of `key`, outermost first, excluding the root.
pub fn ancestors(key: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut end = 0;
    while let Some(i) = key[end + 1..].find('/') {
        end += i + 1;
        out.push(&key[..end]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_like_etcd() {
        assert_eq!(clean(""), "/");
        assert_eq!(clean("/"), "/");
        assert_eq!(clean("foo"), "/foo");
        assert_eq!(clean("//foo//bar/"), "/foo/bar");
        assert_eq!(clean("/foo/./bar/../baz"), "/foo/baz");
        assert_eq!(clean("/../.."), "/");
    }

    #[test]
    fn shapes() {
        assert_eq!(parent("/a/b/c"), "/a/b");
        assert_eq!(parent("/a"), "/");
        assert_eq!(base("/a/b"), "b");
        assert!(is_hidden("/a/_b"));
        assert!(!is_hidden("/_a/b"));
        assert_eq!(ancestors("/a/b/c"), vec!["/a", "/a/b"]);
        assert!(ancestors("/a").is_empty());
        assert!(is_within("/a/b", "/a"));
        assert!(!is_within("/ab", "/a"));
        assert!(is_within("/x", "/"));
    }
}
