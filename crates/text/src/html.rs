//! Python's `html.unescape`, the last step of fastai's `fix_html`.
//!
//! Same regex semantics as CPython's `html/__init__.py`: `&#123;`, `&#x1F;` (`;` optional) with its
//! table of invalid references, and named references from the HTML5 table (longest known prefix
//! when the name is not terminated). Checked by unit tests below against values printed by Python.

use crate::en_tables::HTML5_ENTITIES;

/// Windows-1252 meanings of the C1 references `&#128;`..`&#159;` (CPython `_invalid_charrefs`).
const CP1252: [char; 32] = [
    '\u{20ac}', '\u{81}', '\u{201a}', '\u{192}', '\u{201e}', '\u{2026}', '\u{2020}', '\u{2021}', '\u{2c6}', '\u{2030}',
    '\u{160}', '\u{2039}', '\u{152}', '\u{8d}', '\u{17d}', '\u{8f}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201c}',
    '\u{201d}', '\u{2022}', '\u{2013}', '\u{2014}', '\u{2dc}', '\u{2122}', '\u{161}', '\u{203a}', '\u{153}', '\u{9d}',
    '\u{17e}', '\u{178}',
];

fn entity(name: &str) -> Option<&'static str> {
    HTML5_ENTITIES.binary_search_by(|(n, _)| (*n).cmp(name)).ok().map(|i| HTML5_ENTITIES[i].1)
}

/// Text of the numeric reference `num` (CPython `_replace_charref`, numeric branch).
fn push_charref(out: &mut String, num: u64) {
    match num {
        0 => out.push('\u{fffd}'),
        0x0d => out.push('\r'),
        0x80..=0x9f => out.push(CP1252[(num - 0x80) as usize]),
        0xd800..=0xdfff => out.push('\u{fffd}'),
        n if n > 0x10ffff => out.push('\u{fffd}'),
        0x1..=0x8 | 0xb | 0xe..=0x1f | 0x7f | 0xfdd0..=0xfdef => {}
        n if (n & 0xfffe) == 0xfffe => {}
        n => out.push(char::from_u32(n as u32).unwrap_or('\u{fffd}')),
    }
}

/// Parses a numeric reference after `&#` in `rest`; returns (value, bytes consumed after `&`).
fn numeric(rest: &str) -> Option<(u64, usize)> {
    let b = rest.as_bytes();
    let (hex, start) = match b.get(1) {
        Some(b'x' | b'X') => (true, 2),
        _ => (false, 1),
    };
    let digits = b[start..].iter().take_while(|d| if hex { d.is_ascii_hexdigit() } else { d.is_ascii_digit() }).count();
    if digits == 0 {
        return None;
    }
    let radix = if hex { 16 } else { 10 };
    let num = b[start..start + digits].iter().fold(0u64, |acc, d| {
        let v = (*d as char).to_digit(radix).unwrap_or(0) as u64;
        acc.saturating_mul(radix as u64).saturating_add(v)
    });
    let mut used = start + digits;
    if b.get(used) == Some(&b';') {
        used += 1;
    }
    Some((num, used))
}

/// Replaces HTML character references in `s` as Python's `html.unescape` does.
pub fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        if after.starts_with('#') {
            if let Some((num, used)) = numeric(after) {
                push_charref(&mut out, num);
                rest = &after[used..];
                continue;
            }
            out.push('&');
            rest = after;
            continue;
        }
        // Named: up to 32 chars of [^\t\n\f <&#;], then an optional ';'.
        let mut end = 0;
        for (n, (i, c)) in after.char_indices().enumerate() {
            if n == 32 || matches!(c, '\t' | '\n' | '\x0c' | ' ' | '<' | '&' | '#' | ';') {
                end = i;
                break;
            }
            end = i + c.len_utf8();
        }
        if end == 0 {
            out.push('&');
            rest = after;
            continue;
        }
        if after[end..].starts_with(';') {
            end += 1;
        }
        let name = &after[..end];
        rest = &after[end..];
        if let Some(text) = entity(name) {
            out.push_str(text);
            continue;
        }
        // Longest known prefix of at least 2 chars, shorter than the whole name.
        let bounds: Vec<usize> = name.char_indices().map(|(i, _)| i).skip(2).collect();
        match bounds.iter().rev().find_map(|&x| entity(&name[..x]).map(|t| (x, t))) {
            Some((x, text)) => {
                out.push_str(text);
                out.push_str(&name[x..]);
            }
            None => {
                out.push('&');
                out.push_str(name);
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::unescape;

    #[test]
    fn matches_python_html_unescape() {
        // Expected values printed by python3 -c "import html; print(repr(html.unescape(...)))".
        let cases = [
            ("a &amp; b", "a & b"),
            ("&lt;i&gt;", "<i>"),
            ("&#39;x&#x27;", "'x'"),
            ("&#150;", "\u{2013}"),
            ("&copy2019", "\u{a9}2019"),
            ("&notit;", "\u{ac}it;"),
            ("&&", "&&"),
            ("&#;", "&#;"),
            ("&zzz;", "&zzz;"),
            ("&#0;", "\u{fffd}"),
            ("&#1;x", "x"),
            ("&#99999999999;", "\u{fffd}"),
            ("&eacute", "\u{e9}"),
        ];
        for (input, want) in cases {
            assert_eq!(unescape(input), want, "unescape({input:?})");
        }
    }
}
