//! "Did you mean ...?" for typos in configuration keys and JSON fields.
//!
//! serde reports an unknown key as ``unknown field `concurency`, expected
//! one of `concurrency`, `queues` ``; [`unknown_field`] rewrites that into a
//! message that suggests the nearest valid key when it is close enough.

/// Levenshtein distance between two strings (by characters).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate nearest to `word`, if it is close enough to be a typo.
pub(crate) fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Rewrites serde's "unknown field" message (any other message is returned
/// unchanged): names the key, suggests the nearest valid one, lists the rest.
pub(crate) fn unknown_field(message: &str, what: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_owned();
    };
    let Some((field, rest)) = rest.split_once('`') else {
        return message.to_owned();
    };
    let valid: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let mut out = format!("unknown {what} `{field}`");
    if let Some(best) = nearest(field, &valid) {
        out.push_str(&format!(" (did you mean `{best}`?)"));
    }
    if valid.is_empty() {
        out.push_str("; none is allowed here");
    } else {
        out.push_str(&format!("; valid: {}", valid.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("concurency", "concurrency"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn suggests_close_keys_only() {
        assert_eq!(
            nearest("concurency", &["concurrency", "queues"]),
            Some("concurrency")
        );
        assert_eq!(nearest("zzz", &["concurrency", "queues"]), None);
    }

    #[test]
    fn rewrites_serde_messages() {
        let m = unknown_field(
            "unknown field `concurency`, expected one of `concurrency`, `queues`",
            "key",
        );
        assert_eq!(
            m,
            "unknown key `concurency` (did you mean `concurrency`?); valid: concurrency, queues"
        );
        let m = unknown_field("unknown field `x`, expected `listen`", "key");
        assert_eq!(m, "unknown key `x`; valid: listen");
        assert_eq!(unknown_field("something else", "key"), "something else");
    }
}
