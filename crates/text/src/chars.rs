//! Character classes used by the fastai rules and the spaCy-like splitter.
//!
//! Python's `str.isspace`/`\s`, `\w` and spaCy's ALPHA classes are range tables generated from
//! Python itself (`en_tables.rs`); ASCII takes a branch-free fast path. Checked against fastai
//! through the agreement test (`tests/fastai_agreement.rs`).

use crate::en_tables as t;

/// True if `c` lies in one of the sorted, disjoint inclusive ranges of `table`.
pub(crate) fn in_ranges(c: char, table: &[(u32, u32)]) -> bool {
    let c = c as u32;
    table
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Python's `str.isspace()` (the `\s` of `re`).
#[inline]
pub(crate) fn is_space(c: char) -> bool {
    if c.is_ascii() {
        matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c' | '\x1c'..='\x1f')
    } else {
        in_ranges(c, t::PY_SPACE)
    }
}

/// Python's `\w` (letters, digits, underscore in the Unicode sense).
#[inline]
pub(crate) fn is_word(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || c == '_'
    } else {
        in_ranges(c, t::PY_WORD)
    }
}

/// spaCy's `ALPHA`.
#[inline]
pub(crate) fn is_alpha(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphabetic()
    } else {
        in_ranges(c, t::ALPHA)
    }
}

/// spaCy's `ALPHA_LOWER`.
#[inline]
pub(crate) fn is_alpha_lower(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_lowercase()
    } else {
        in_ranges(c, t::ALPHA_LOWER)
    }
}

/// spaCy's `ALPHA_UPPER`.
#[inline]
pub(crate) fn is_alpha_upper(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_uppercase()
    } else {
        in_ranges(c, t::ALPHA_UPPER)
    }
}

/// spaCy's `CONCAT_QUOTES`.
#[inline]
pub(crate) fn is_quote(c: char) -> bool {
    in_ranges(c, t::QUOTES)
}

/// spaCy's `ICONS` (symbols, emoji).
#[inline]
pub(crate) fn is_icon(c: char) -> bool {
    !c.is_ascii() && in_ranges(c, t::ICONS)
}

/// Characters spaCy splits off the front of a token on their own.
#[inline]
pub(crate) fn is_prefix_char(c: char) -> bool {
    in_ranges(c, t::PREFIX_CHARS)
}

/// Characters spaCy splits off the end of a token whatever precedes them.
#[inline]
pub(crate) fn is_suffix_char(c: char) -> bool {
    in_ranges(c, t::SUFFIX_CHARS)
}

/// Characters after which a single final `.` is split off.
#[inline]
pub(crate) fn is_dot_suffix_after(c: char) -> bool {
    in_ranges(c, t::DOT_SUFFIX_AFTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_fast_paths_match_tables() {
        for b in 0u8..128 {
            let c = b as char;
            assert_eq!(is_space(c), in_ranges(c, t::PY_SPACE), "space {b}");
            assert_eq!(is_word(c), in_ranges(c, t::PY_WORD), "word {b}");
            assert_eq!(is_alpha(c), in_ranges(c, t::ALPHA), "alpha {b}");
            assert_eq!(is_alpha_lower(c), in_ranges(c, t::ALPHA_LOWER), "lower {b}");
            assert_eq!(is_alpha_upper(c), in_ranges(c, t::ALPHA_UPPER), "upper {b}");
            assert_eq!(is_icon(c), in_ranges(c, t::ICONS), "icon {b}");
        }
        assert!(is_space('\u{a0}') && is_space('\u{3000}') && !is_space('\u{200b}'));
        assert!(is_alpha('é') && is_alpha_lower('é') && !is_alpha_upper('é'));
    }
}
