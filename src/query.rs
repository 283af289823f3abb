//! A request's query string as name/value pairs, percent-decoded: what the GCE and Azure
//! protocols read their options from (`?recursive=true`, `?api-version=...`). Bounded by the
//! HTTP layer's path-length limit, which counts the query.
//!
//! The decoding is the `percent-encoding` crate's (the `url` crate's own); this module adds
//! only the form rule that `+` is a space.

/// The query string's parameters, percent-decoded; the first of a repeated name wins.
#[derive(Debug, Default)]
pub struct Query {
    raw: String,
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Splits `raw` (the part after `?`, without it) at `&` and each pair at its first `=`,
    /// then decodes both halves; a name without `=` has the empty value.
    pub fn parse(raw: &str) -> Query {
        let pairs = raw
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(name), percent_decode(value))
            })
            .collect();
        Query {
            raw: raw.to_owned(),
            pairs,
        }
    }

    /// The raw query string, as it came.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// A name given more than once, if any.
    pub fn duplicated(&self) -> Option<&str> {
        self.pairs
            .iter()
            .enumerate()
            .find(|(index, (name, _))| {
                self.pairs[..*index]
                    .iter()
                    .any(|(earlier, _)| earlier == name)
            })
            .map(|(_, (name, _))| name.as_str())
    }

    /// The decoded value of the first `name` (matched exactly, after decoding); `None` when
    /// the name is absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// `%XX` and `+` decoding; an invalid escape is kept as it is, invalid UTF-8 replaced.
pub fn percent_decode(text: &str) -> String {
    // `+` first: a `%2B` decodes to a `+` that stays one.
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_escapes_plus_and_broken_input() {
        assert_eq!(percent_decode("a%2Fb+c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%e2%82%ac"), "€");
        assert_eq!(percent_decode("1%2B1"), "1+1");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
        assert_eq!(percent_decode("%4"), "%4");
    }

    #[test]
    fn the_first_of_a_repeated_name_wins_and_the_repeat_is_reported() {
        let query = Query::parse("a=1&b=2&a=3");
        assert_eq!(query.get("a"), Some("1"));
        assert_eq!(query.duplicated(), Some("a"));
        assert_eq!(Query::parse("a=1&b").duplicated(), None);
        assert_eq!(Query::parse("b").get("b"), Some(""));
    }
}
