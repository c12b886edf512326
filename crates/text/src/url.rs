//! spaCy's `URL_MATCH` (spacy/lang/tokenizer_exceptions.py) as a hand-written matcher.
//!
//! The regex is anchored at both ends: optional `scheme://`, optional `user@`, then an IPv4
//! address (private ranges excluded) or `label.`+ TLD (TLD in ALPHA_LOWER, 2..63), optional
//! `:port`, optional `[/?#]path`. Strings reaching it never contain whitespace. Checked by the
//! unit tests below (cases run through spaCy's regex) and by the agreement test.

use crate::chars::{is_alpha_lower, is_word};

/// True if spaCy's `URL_MATCH` matches the whole of `s`.
pub(crate) fn url_match(s: &str) -> bool {
    // Both host forms (domain with TLD, dotted IPv4) contain a '.'.
    if !s.contains('.') {
        return false;
    }
    if let Some(colon) = s.find(':') {
        let scheme = &s[..colon];
        if s[colon..].starts_with("://")
            && scheme.chars().count() >= 2
            && scheme.chars().all(|c| is_word(c) || matches!(c, '+' | '-' | '.'))
            && after_scheme(&s[colon + 3..])
        {
            return true;
        }
    }
    after_scheme(s)
}

/// `(?:\S+(?::\S*)?@)?` host port? path? `$`.
fn after_scheme(r: &str) -> bool {
    if host_port_path(r) {
        return true;
    }
    r.char_indices().filter(|&(i, c)| c == '@' && i > 0).any(|(i, _)| host_port_path(&r[i + 1..]))
}

fn host_port_path(t: &str) -> bool {
    let end = t.find(['/', '?', '#']).unwrap_or(t.len());
    let host_port = &t[..end];
    let host = match host_port.split_once(':') {
        Some((host, port)) => {
            let n = port.len();
            if !(2..=5).contains(&n) || !port.bytes().all(|b| b.is_ascii_digit()) {
                return false;
            }
            host
        }
        None => host_port,
    };
    domain(host) || ipv4(host)
}

fn label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || ('\u{a1}'..='\u{ffff}').contains(&c)
}

/// `(?:(?:[X][X_-]{0,62})?[X]\.)+[ALPHA_LOWER]{2,63}`.
fn domain(h: &str) -> bool {
    let Some((labels, tld)) = h.rsplit_once('.') else {
        return false;
    };
    let n = tld.chars().count();
    if !(2..=63).contains(&n) || !tld.chars().all(is_alpha_lower) {
        return false;
    }
    labels.split('.').all(|l| {
        let n = l.chars().count();
        (1..=64).contains(&n)
            && l.chars().next().is_some_and(label_char)
            && l.chars().last().is_some_and(label_char)
            && l.chars().all(|c| label_char(c) || c == '_' || c == '-')
    })
}

/// Dotted IPv4 as spaCy's regex accepts it (no private or loopback ranges).
fn ipv4(h: &str) -> bool {
    let parts: Vec<&str> = h.split('.').collect();
    if parts.len() != 4 || parts.iter().any(|p| p.is_empty() || p.len() > 3) {
        return false;
    }
    if !parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    let v = |p: &str| p.parse::<u32>().unwrap_or(999);
    let no_lead_zero = |p: &str| !p.starts_with('0');
    let first_ok = no_lead_zero(parts[0]) && (1..=223).contains(&v(parts[0]));
    // `1?\d{1,2}` allows "0".."99" with a leading zero on two digits, and 100..199.
    let mid_ok = |p: &str| match p.len() {
        1 | 2 => true,
        _ => no_lead_zero(p) && v(p) <= 255,
    };
    let last_ok = no_lead_zero(parts[3]) && (1..=254).contains(&v(parts[3]));
    let (a, b) = (v(parts[0]), v(parts[1]));
    let private =
        a == 10 || a == 127 || (a == 169 && b == 254) || (a == 192 && b == 168) || (a == 172 && (16..=31).contains(&b));
    first_ok && mid_ok(parts[1]) && mid_ok(parts[2]) && last_ok && !private
}

#[cfg(test)]
mod tests {
    use super::url_match;

    #[test]
    fn matches_spacy_url_regex() {
        // Expected values from spacy.lang.tokenizer_exceptions.URL_MATCH.
        let cases = [
            ("http://www.imdb.com/title/tt0123/", true),
            ("www.imdb.com", true),
            ("film.the", true),
            ("1.5", false),
            ("me@gmail.com", true),
            ("8.8.8.8", true),
            ("10.0.0.1", false),
            ("end.it's", false),
            ("a.b", false),
            ("imdb.com:8080/x?y#z", true),
            ("http://", false),
            ("e.g", false),
            ("u.s.a", false),
        ];
        for (s, want) in cases {
            assert_eq!(url_match(s), want, "url_match({s:?})");
        }
    }
}
