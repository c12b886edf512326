//! fastai v2's text pre-rules (`defaults.text_proc_rules`), applied in fastai's order:
//! `fix_html`, `replace_rep`, `replace_wrep`, `spec_add_spaces`, `rm_useless_spaces`,
//! `replace_all_caps`, `replace_maj`, `lowercase` (adds `xxbos`).
//!
//! Each rule is a plain scan that reproduces the result of fastai's regex (fastai/text/core.py),
//! including its backtracking and where `re.sub` resumes after a match. Checked by the unit tests
//! below (expected strings printed by fastai) and by the agreement test on real documents.

use crate::chars::{is_space, is_word};
use crate::html;

/// Special tokens in fastai's vocabulary order.
pub const SPECIAL_TOKENS: [&str; 9] = ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj"];

/// fastai `fix_html`: literal replacements of messy HTML, then `html.unescape`.
pub fn fix_html(x: &str) -> String {
    const REPLACE: [(&str, &str); 13] = [
        ("#39;", "'"),
        ("amp;", "&"),
        ("#146;", "'"),
        ("nbsp;", " "),
        ("#36;", "$"),
        ("\\n", "\n"),
        ("quot;", "'"),
        ("<br />", "\n"),
        ("\\\"", "\""),
        ("<unk>", "xxunk"),
        (" @.@ ", "."),
        (" @-@ ", "-"),
        ("...", " \u{2026}"),
    ];
    let mut s = x.to_string();
    for (from, to) in REPLACE {
        if s.contains(from) {
            s = s.replace(from, to);
        }
    }
    html::unescape(&s)
}

/// fastai `replace_rep`: a non-space character repeated 3+ times -> ` xxrep N c `.
pub fn replace_rep(t: &str) -> String {
    let mut out = String::with_capacity(t.len() + 16);
    let mut copied = 0;
    let mut it = t.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        let mut n = 1;
        while it.peek().map(|&(_, d)| d) == Some(c) {
            it.next();
            n += 1;
        }
        if n >= 3 && !is_space(c) {
            out.push_str(&t[copied..i]);
            out.push_str(&format!(" xxrep {n} {c} "));
            copied = i + n * c.len_utf8();
        }
    }
    out.push_str(&t[copied..]);
    out
}

/// Length in bytes of the run of chars at the start of `s` satisfying `f`.
fn run_len(s: &str, f: impl Fn(char) -> bool) -> usize {
    s.char_indices().find(|&(_, c)| !f(c)).map_or(s.len(), |(i, _)| i)
}

/// Tries fastai's `(?:\s|^)(\w+)\s+((?:\1\s+)+)\1(\s|\W|$)` at byte `p` of `t`.
/// Returns (match end, word, repetition count, captured end char) on success.
fn wrep_at(t: &str, p: usize) -> Option<(usize, &str, usize, &str)> {
    let first = t[p..].chars().next()?;
    let w0 = if is_space(first) {
        p + first.len_utf8()
    } else if p == 0 {
        0
    } else {
        return None;
    };
    let wlen = run_len(&t[w0..], is_word);
    if wlen == 0 {
        return None;
    }
    let word = &t[w0..w0 + wlen];
    let sp = run_len(&t[w0 + wlen..], is_space);
    if sp == 0 {
        return None;
    }
    // Greedy (word \s+)+ ; `starts[k]` = where repetition k begins.
    let mut pos = w0 + wlen + sp;
    let mut starts = vec![pos];
    while t[pos..].starts_with(word) {
        let s = run_len(&t[pos + wlen..], is_space);
        if s == 0 {
            break;
        }
        pos += wlen + s;
        starts.push(pos);
    }
    let k = starts.len() - 1;
    // Final \1 then (\s|\W|$), backtracking one repetition if needed.
    for reps in [k, k.saturating_sub(1)] {
        if reps == 0 {
            break;
        }
        let at = starts[reps];
        if !t[at..].starts_with(word) {
            continue;
        }
        let after = at + wlen;
        match t[after..].chars().next() {
            None => return Some((after, word, reps + 2, "")),
            Some(c) if !is_word(c) => {
                let e = after + c.len_utf8();
                return Some((e, word, reps + 2, &t[after..e]));
            }
            Some(_) => {}
        }
    }
    None
}

/// fastai `replace_wrep`: a word repeated 3+ times (space separated) -> ` xxwrep N w `.
pub fn replace_wrep(t: &str) -> String {
    let mut out = String::with_capacity(t.len() + 16);
    let (mut copied, mut p) = (0, 0);
    let bytes = t.as_bytes();
    while p < t.len() {
        // A match starts only at the beginning or at a whitespace character.
        if p > 0 && bytes[p] < 0x80 && !is_space(bytes[p] as char) {
            p += 1;
            continue;
        }
        if let Some((end, word, n, e)) = wrep_at(t, p) {
            out.push_str(&t[copied..p]);
            out.push_str(&format!(" xxwrep {n} {word} {e}"));
            copied = end;
            p = end;
            continue;
        }
        p += t[p..].chars().next().map_or(1, char::len_utf8);
    }
    out.push_str(&t[copied..]);
    out
}

/// fastai `spec_add_spaces`: spaces around `/`, `#` and `\`.
pub fn spec_add_spaces(t: &str) -> String {
    if !t.contains(['/', '#', '\\']) {
        return t.to_string();
    }
    let mut out = String::with_capacity(t.len() + 8);
    for c in t.chars() {
        if matches!(c, '/' | '#' | '\\') {
            out.push(' ');
            out.push(c);
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// fastai `rm_useless_spaces`: runs of 2+ spaces (U+0020 only) -> one space.
pub fn rm_useless_spaces(t: &str) -> String {
    if !t.contains("  ") {
        return t.to_string();
    }
    let mut out = String::with_capacity(t.len());
    let mut prev_space = false;
    for c in t.chars() {
        if c == ' ' && prev_space {
            continue;
        }
        prev_space = c == ' ';
        out.push(c);
    }
    out
}

/// Rewrites each maximal non-space run `w` that starts with an ASCII capital with `f(w)`
/// (`None` keeps it). This is what fastai's `(\s|^)([A-Z]...)(?=(\s|$))` substitutions amount
/// to: the pattern must span the whole run. Unchanged text is copied in whole segments.
fn map_capitalised_words(t: &str, f: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(t.len() + 16);
    let (mut copied, mut start): (usize, Option<usize>) = (0, None);
    for (i, c) in t.char_indices().chain(std::iter::once((t.len(), ' '))) {
        match (is_space(c), start) {
            (true, Some(s)) => {
                if t.as_bytes()[s].is_ascii_uppercase() {
                    if let Some(r) = f(&t[s..i]) {
                        out.push_str(&t[copied..s]);
                        out.push_str(&r);
                        copied = i;
                    }
                }
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    out.push_str(&t[copied..]);
    out
}

/// fastai `replace_all_caps`: `([A-Z]+[^a-z\s]*)` words -> `xxup` + lowercase (if longer than 1).
pub fn replace_all_caps(t: &str) -> String {
    map_capitalised_words(t, |w| {
        if w.bytes().any(|b| b.is_ascii_lowercase()) {
            return None;
        }
        let tag = if w.chars().nth(1).is_some() { "xxup " } else { "" };
        Some(format!("{tag}{}", w.to_lowercase()))
    })
}

/// fastai `replace_maj`: `([A-Z][^A-Z\s]*)` words -> `xxmaj` + lowercase (if longer than 1).
pub fn replace_maj(t: &str) -> String {
    map_capitalised_words(t, |w| {
        if w.as_bytes()[1..].iter().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let tag = if w.chars().nth(1).is_some() { "xxmaj " } else { "" };
        Some(format!("{tag}{}", w.to_lowercase()))
    })
}

/// fastai `lowercase` (add_bos=True, add_eos=False): `xxbos ` + lowercased, stripped text.
pub fn lowercase(t: &str) -> String {
    let lower = t.to_lowercase();
    format!("xxbos {}", lower.trim_matches(is_space))
}

/// All fastai pre-rules in fastai's order.
pub fn apply_rules(text: &str) -> String {
    let t = fix_html(text);
    let t = replace_rep(&t);
    let t = replace_wrep(&t);
    let t = spec_add_spaces(&t);
    let t = rm_useless_spaces(&t);
    let t = replace_all_caps(&t);
    let t = replace_maj(&t);
    lowercase(&t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_fastai_examples() {
        // Expected values printed by fastai.text.core's rules (fastai 2.8).
        type Rule = fn(&str) -> String;
        let cases: [(Rule, &str, &str); 12] = [
            (replace_rep, "I'm so excited!!!!!!!!", "I'm so excited xxrep 8 ! "),
            (replace_rep, "aa bbb", "aa  xxrep 3 b "),
            (replace_wrep, "I'm so so so so so excited", "I'm xxwrep 5 so  excited"),
            (replace_wrep, "a a a b b b", " xxwrep 3 a  b b b"),
            (replace_wrep, "go go go-", " xxwrep 3 go -"),
            (replace_wrep, "the the theory", "the the theory"),
            (replace_all_caps, "I'M SHOUTING here A", "xxup i'm xxup shouting here a"),
            (replace_maj, "My name is Jeremy", "xxmaj my name is xxmaj jeremy"),
            (spec_add_spaces, "#fastai/x\\y", " # fastai / x \\ y"),
            (rm_useless_spaces, "a   b \n  c", "a b \n c"),
            (fix_html, "a<br />b &amp; c...", "a\nb && c \u{2026}"),
            (lowercase, " Hello\n", "xxbos hello"),
        ];
        for (i, (f, input, want)) in cases.iter().enumerate() {
            assert_eq!(f(input), *want, "case {i}: rule on {input:?}");
        }
    }
}
