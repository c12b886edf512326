//! Word splitter following spaCy's blank English tokenizer (spacy/tokenizer.pyx), which fastai's
//! `SpacyTokenizer` runs after its pre-rules.
//!
//! The text is cut at whitespace (one ' ' after a word is dropped; other whitespace runs become
//! tokens). Each chunk goes through spaCy's loop: special cases, prefixes and suffixes stripped
//! one at a time, then the URL match or infix splitting, then the special-case matcher that merges
//! token runs spelling a special case. Prefix, suffix and infix rules are hand-written scanners
//! over the character classes generated from spaCy (`en_tables.rs`). Checked against fastai by
//! `tests/fastai_agreement.rs`.

use std::collections::HashMap;

use crate::chars::*;
use crate::en_tables::{CURRENCY, HYPHENS, SPECIAL_CASES, UNITS};
use crate::fxhash::FxBuildHasher;
use crate::rules::SPECIAL_TOKENS;
use crate::url::url_match;

/// spaCy-like English word splitter; cheap to share between threads.
pub struct Splitter {
    /// Special case string -> its tokens.
    specials: HashMap<&'static str, Vec<&'static str>, FxBuildHasher>,
    /// Special-case matcher patterns (tokens without special cases), grouped by first token.
    patterns: HashMap<&'static str, Vec<&'static [&'static str]>, FxBuildHasher>,
}

impl Default for Splitter {
    fn default() -> Self {
        Self::new()
    }
}

impl Splitter {
    /// Builds the splitter with spaCy's English special cases plus fastai's special tokens.
    pub fn new() -> Self {
        let mut specials = HashMap::default();
        let mut patterns: HashMap<_, Vec<_>, FxBuildHasher> = HashMap::default();
        for &(key, toks, pattern) in SPECIAL_CASES {
            specials.insert(key, toks.to_vec());
            if let Some(first) = pattern.first() {
                patterns.entry(*first).or_default().push(pattern);
            }
        }
        for tok in SPECIAL_TOKENS {
            specials.insert(tok, vec![tok]);
        }
        Splitter { specials, patterns }
    }

    /// Splits `text` into tokens, appending them to `out` as slices of `text` or static strings.
    pub fn split<'a>(&self, text: &'a str, out: &mut Vec<&'a str>) {
        let Some(first) = text.chars().next() else {
            return;
        };
        let base = out.len();
        // space_after[k]: token base+k was followed by a ' ' that the split consumed.
        let mut space_after = Vec::new();
        let mut in_ws = is_space(first);
        let mut start = 0;
        for (i, c) in text.char_indices() {
            if is_space(c) != in_ws {
                if start < i {
                    self.chunk(&text[start..i], out);
                }
                space_after.resize(out.len() - base, false);
                if c == ' ' {
                    if let Some(last) = space_after.last_mut() {
                        *last = true;
                    }
                    start = i + 1;
                } else {
                    start = i;
                }
                in_ws = !in_ws;
            }
        }
        if start < text.len() {
            self.chunk(&text[start..], out);
        }
        space_after.resize(out.len() - base, false);
        self.apply_matcher(out, base, &space_after);
    }

    /// One whitespace-delimited chunk: special case, or affixes + infixes, then the matcher.
    fn chunk<'a>(&self, s: &'a str, out: &mut Vec<&'a str>) {
        if let Some(toks) = self.specials.get(s) {
            out.extend(toks.iter().copied());
            return;
        }
        // Fast path: plain lowercase ASCII words have no prefix, suffix, URL or infix.
        if s.bytes().all(|b| b.is_ascii_lowercase()) {
            out.push(s);
            return;
        }
        let mut prefixes: Vec<&'a str> = Vec::new();
        let mut suffixes: Vec<&'a str> = Vec::new();
        let rest = self.split_affixes(s, &mut prefixes, &mut suffixes);
        out.extend(prefixes);
        if !rest.is_empty() {
            // `rest` is the whole chunk when nothing was stripped: known not to be special.
            let special = if rest.len() == s.len() { None } else { self.specials.get(rest) };
            if let Some(toks) = special {
                out.extend(toks.iter().copied());
            } else if url_match(rest) {
                out.push(rest);
            } else {
                split_infixes(rest, out);
            }
        }
        out.extend(suffixes.into_iter().rev());
    }

    /// spaCy `_split_affixes`: strips prefixes and suffixes until nothing changes or a special
    /// case remains. Returns what is left in the middle.
    fn split_affixes<'a>(&self, mut s: &'a str, prefixes: &mut Vec<&'a str>, suffixes: &mut Vec<&'a str>) -> &'a str {
        let (mut last_len, whole) = (usize::MAX, s.len());
        while !s.is_empty() && s.len() != last_len {
            // The caller already looked the whole chunk up.
            if s.len() != whole && self.specials.contains_key(s) {
                break;
            }
            last_len = s.len();
            let pre = find_prefix(s);
            if pre != 0 && pre < s.len() && self.specials.contains_key(&s[pre..]) {
                prefixes.push(&s[..pre]);
                return &s[pre..];
            }
            let suf = find_suffix(&s[pre..]);
            let cut = s.len() - suf;
            if suf != 0 && cut > 0 && self.specials.contains_key(&s[..cut]) {
                suffixes.push(&s[cut..]);
                return &s[..cut];
            }
            if pre != 0 && suf != 0 && pre + suf <= s.len() {
                prefixes.push(&s[..pre]);
                suffixes.push(&s[cut..]);
                s = &s[pre..cut];
            } else if pre != 0 {
                prefixes.push(&s[..pre]);
                s = &s[pre..];
            } else if suf != 0 {
                suffixes.push(&s[cut..]);
                s = &s[..cut];
            }
        }
        s
    }

    /// spaCy `_apply_special_cases` on `out[base..]`: token runs equal to a special case's plain
    /// tokenization are found (across whitespace, as spaCy's PhraseMatcher does), filtered longest
    /// first without shared ends, and replaced by the special case when the run's text (with its
    /// spaces) is a special-case string.
    fn apply_matcher<'a>(&self, out: &mut Vec<&'a str>, base: usize, space_after: &[bool]) {
        let toks = &out[base..];
        let mut matches: Vec<(usize, usize)> = Vec::new();
        for i in 0..toks.len() {
            let Some(cands) = self.patterns.get(toks[i]) else {
                continue;
            };
            for &pat in cands {
                if toks.len() - i >= pat.len() && toks[i..i + pat.len()] == *pat {
                    matches.push((i, i + pat.len()));
                }
            }
        }
        if matches.is_empty() {
            return;
        }
        // Longest first, then leftmost; a span is taken if its ends are not yet covered.
        matches.sort_by(|a, b| (b.1 - b.0).cmp(&(a.1 - a.0)).then(a.0.cmp(&b.0)));
        matches.dedup();
        let mut seen = vec![false; toks.len()];
        let mut taken = Vec::new();
        for &(s, e) in &matches {
            if !seen[s] && !seen[e - 1] {
                let mut text = String::new();
                for k in s..e {
                    text.push_str(toks[k]);
                    if k + 1 < e && space_after[k] {
                        text.push(' ');
                    }
                }
                if let Some(special) = self.specials.get(text.as_str()) {
                    taken.push((s, e, special));
                }
            }
            seen[s..e].iter_mut().for_each(|x| *x = true);
        }
        if taken.is_empty() {
            return;
        }
        taken.sort_by_key(|m| m.0);
        let old: Vec<&'a str> = out.drain(base..).collect();
        let mut i = 0;
        for (s, e, special) in taken {
            out.extend_from_slice(&old[i..s]);
            out.extend(special.iter().copied());
            i = e;
        }
        out.extend_from_slice(&old[i..]);
    }
}

/// spaCy English prefix: byte length of the prefix at the start of `s` (0 if none).
fn find_prefix(s: &str) -> usize {
    let mut it = s.chars();
    let Some(c) = it.next() else { return 0 };
    match c {
        '.' => {
            let run = s.bytes().take_while(|&b| b == b'.').count();
            if run >= 2 {
                run
            } else {
                0
            }
        }
        '+' => match it.next() {
            Some(n) if n.is_ascii_digit() => 0,
            _ => 1,
        },
        _ if is_prefix_char(c) => c.len_utf8(),
        _ => ["US$", "C$", "A$"].iter().find(|p| s.starts_with(**p)).map_or(0, |p| p.len()),
    }
}

/// spaCy English suffix: byte length of the longest suffix alternative matching the end of `s`.
fn find_suffix(s: &str) -> usize {
    let mut rev = s.chars().rev();
    let Some(last) = rev.next() else { return 0 };
    let prev = rev.next();
    let prev2 = rev.next();
    let mut best = 0;
    if is_suffix_char(last) {
        best = last.len_utf8();
    }
    if s.ends_with("\u{2026}\u{2026}") {
        best = best.max(6);
    }
    if last == '.' {
        let run = s.bytes().rev().take_while(|&b| b == b'.').count();
        if run >= 2 {
            best = best.max(run);
        } else if let Some(p) = prev {
            let upper2 = is_alpha_upper(p) && prev2.is_some_and(is_alpha_upper);
            let degree = matches!(p, 'F' | 'f' | 'C' | 'c' | 'K' | 'k') && prev2 == Some('\u{b0}');
            if is_dot_suffix_after(p) || upper2 || degree {
                best = best.max(1);
            }
        }
    }
    for q in ["'s", "'S", "\u{2019}s", "\u{2019}S"] {
        if s.ends_with(q) {
            best = best.max(q.len());
        }
    }
    if last == '+' && prev.is_some_and(|p| p.is_ascii_digit()) {
        best = best.max(1);
    }
    // (?<=[0-9])(?:CURRENCY|UNITS): the tail after the last ASCII digit.
    if let Some(d) = s.bytes().rposition(|b| b.is_ascii_digit()) {
        let tail = &s[d + 1..];
        if !tail.is_empty() && (UNITS.contains(&tail) || CURRENCY.contains(&tail)) {
            best = best.max(tail.len());
        }
    }
    best
}

/// Byte length of the infix starting at `i` in `s` (after char `prev`), or 0 if none.
fn infix_at(s: &str, i: usize, prev: Option<char>) -> usize {
    let rest = &s[i..];
    let mut it = rest.chars();
    let Some(c) = it.next() else { return 0 };
    let next = it.next();
    let prev_alnum = prev.is_some_and(|p| is_alpha(p) || p.is_ascii_digit());
    match c {
        '.' if next == Some('.') => return rest.bytes().take_while(|&b| b == b'.').count(),
        '\u{2026}' => return c.len_utf8(),
        _ if is_icon(c) => return c.len_utf8(),
        _ => {}
    }
    if matches!(c, '+' | '-' | '*' | '^')
        && prev.is_some_and(|p| p.is_ascii_digit())
        && next.is_some_and(|n| n.is_ascii_digit() || n == '-')
    {
        return 1;
    }
    let next_alpha = next.is_some_and(is_alpha);
    match c {
        '.' if prev.is_some_and(|p| is_alpha_lower(p) || is_quote(p))
            && next.is_some_and(|n| is_alpha_upper(n) || is_quote(n)) =>
        {
            1
        }
        ',' if prev.is_some_and(is_alpha) && next_alpha => 1,
        ':' | '<' | '>' | '=' | '/' if prev_alnum && next_alpha => 1,
        _ if prev_alnum => HYPHENS
            .iter()
            .find(|h| rest.starts_with(**h) && rest[h.len()..].chars().next().is_some_and(is_alpha))
            .map_or(0, |h| h.len()),
        _ => 0,
    }
}

/// spaCy `_attach_tokens` infix branch: splits `s` around infixes found left to right; an infix
/// at position 0 is not split off.
fn split_infixes<'a>(s: &'a str, out: &mut Vec<&'a str>) {
    let mut start = 0;
    let mut prev = None;
    let mut i = 0;
    while i < s.len() {
        let n = infix_at(s, i, prev);
        if n == 0 || i == 0 {
            let c = s[i..].chars().next().unwrap_or(' ');
            let step = if n == 0 { c.len_utf8() } else { n };
            prev = s[..i + step].chars().next_back();
            i += step;
            continue;
        }
        if i != start {
            out.push(&s[start..i]);
        }
        out.push(&s[i..i + n]);
        start = i + n;
        prev = s[..start].chars().next_back();
        i = start;
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
}

#[cfg(test)]
mod tests {
    use super::Splitter;

    #[test]
    fn splits_like_spacy() {
        // Expected tokens from spacy.blank("en") (spaCy 3.8) on lowercased text.
        let cases: [(&str, &[&str]); 11] = [
            ("don't stop", &["do", "n't", "stop"]),
            ("it's (really) good.", &["it", "'s", "(", "really", ")", "good", "."]),
            ("10km well-known e.g. 5$", &["10", "km", "well", "-", "known", "e.g.", "5", "$"]),
            ("visit www.imdb.com/title now", &["visit", "www.imdb.com/title", "now"]),
            ("a  b\n\nc", &["a", " ", "b", "\n\n", "c"]),
            ("hello,world :) ..", &["hello", ",", "world", ":)", ".."]),
            ("1-2 3+4 x/y", &["1", "-", "2", "3", "+", "4", "x", "/", "y"]),
            ("can't", &["ca", "n't"]),
            ("\"yes!\"", &["\"", "yes", "!", "\""]),
            ("film.the end", &["film.the", "end"]),
            ("back'' ''return", &["back", "''", "'", "'", "return"]),
        ];
        let sp = Splitter::new();
        for (text, want) in cases {
            let mut got = Vec::new();
            sp.split(text, &mut got);
            assert_eq!(got, want, "split({text:?})");
        }
    }
}
