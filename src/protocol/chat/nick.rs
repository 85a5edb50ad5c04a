//! Nick rules: what `/nick NAME` accepts. A name is shown to everyone, so it may not hide,
//! reorder or impersonate: no separators, no invisible format characters, no tall stacks of
//! combining marks, no leading `*` a server notice could be taken for.

/// Longest display name `/nick` accepts, in characters.
pub const MAX_NICK_CHARS: usize = 32;

/// Unicode format characters (category Cf) that print as nothing or reorder text: a name
/// holding one could pass for another (`a\u{200b}lice` for `alice`) or flip a line's direction.
pub(super) fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{034f}' | '\u{061c}' | '\u{115f}' | '\u{1160}' | '\u{180e}'
        | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}'
        | '\u{3164}' | '\u{feff}' | '\u{ffa0}' | '\u{fff9}'..='\u{fffb}')
}

/// The longest run of combining marks in `name` (the common blocks: diacritics, their
/// extensions and supplement, marks for symbols, half marks): a tall stack of them
/// overwrites the lines around the name on screen.
pub(super) fn combining_run(name: &str) -> usize {
    let combining = |c: char| {
        matches!(c, '\u{0300}'..='\u{036f}' | '\u{1ab0}'..='\u{1aff}' | '\u{1dc0}'..='\u{1dff}'
            | '\u{20d0}'..='\u{20ff}' | '\u{fe20}'..='\u{fe2f}')
    };
    let (mut longest, mut run) = (0, 0);
    for c in name.chars() {
        run = if combining(c) { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    longest
}

/// Why `/nick NAME` is refused, or `Ok` with the name to use.
pub fn check_nick(name: &str) -> Result<&str, String> {
    let n = name.chars().count();
    if n == 0 {
        return Err("usage: /nick NAME".into());
    }
    if n > MAX_NICK_CHARS {
        return Err(format!("a name has at most {MAX_NICK_CHARS} characters"));
    }
    // U+2028 and U+2029 break lines in many clients without being controls.
    if name
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
    {
        return Err("a name may not contain control characters or line breaks".into());
    }
    if combining_run(name) > 2 {
        return Err("a name may not stack more than two combining marks on a letter".into());
    }
    if name.chars().any(invisible) {
        return Err("a name may not contain invisible or direction-changing characters".into());
    }
    if name.trim() != name {
        return Err("a name may not start or end with spaces".into());
    }
    // ':' would let a name imitate an address label or a "label: message" prefix; a leading '*'
    // would imitate a server notice.
    if name.contains(':') {
        return Err("a name may not contain ':'".into());
    }
    // Look-alikes of '*' too: a full-width '＊srv' reads as a server notice.
    if name.starts_with([
        '*', '\u{ff0a}', '\u{2217}', '\u{204e}', '\u{fe61}', '\u{2731}',
    ]) {
        return Err("a name may not start with '*' or a look-alike of it".into());
    }
    Ok(name)
}
