//! `$(VAR)` expansion in env values, command and args, as the kubelet does it.
//!
//! `$(NAME)` is replaced by the value of `NAME` when it is defined and left as written
//! otherwise; `$$` is an escaped `$`, so `$$(NAME)` yields the literal `$(NAME)`.

/// Expands `$(VAR)` references in `input` using `lookup`.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let (text, advance) = read_variable(rest, &lookup);
            out.push_str(&text);
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    out.push_str(&input[checkpoint.min(input.len())..]);
    out
}

/// Reads what follows a `$`: returns the replacement text and how many bytes it used.
fn read_variable(rest: &str, lookup: &impl Fn(&str) -> Option<String>) -> (String, usize) {
    match rest.as_bytes().first() {
        Some(b'$') => ("$".to_string(), 1),
        Some(b'(') => match rest[1..].find(')') {
            Some(end) => {
                let name = &rest[1..1 + end];
                let value = lookup(name).unwrap_or_else(|| format!("$({name})"));
                (value, end + 2)
            }
            None => ("$(".to_string(), 1),
        },
        Some(_) => {
            // "$x": keep both characters (x may be multi-byte UTF-8).
            let ch = rest.chars().next().map_or(0, char::len_utf8);
            (format!("${}", &rest[..ch]), ch)
        }
        None => ("$".to_string(), 0),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env() -> HashMap<&'static str, &'static str> {
        HashMap::from([("POD_IP", "127.1.0.7"), ("PORT", "8080"), ("EMPTY", "")])
    }

    fn ex(s: &str) -> String {
        let e = env();
        expand(s, |k| e.get(k).map(|v| v.to_string()))
    }

    #[test]
    fn replaces_defined_variables() {
        assert_eq!(ex("$(POD_IP):$(PORT)"), "127.1.0.7:8080");
        assert_eq!(ex("x$(EMPTY)y"), "xy");
    }

    #[test]
    fn keeps_undefined_and_escaped() {
        assert_eq!(ex("$(NOPE)"), "$(NOPE)");
        assert_eq!(ex("$$(POD_IP)"), "$(POD_IP)");
        assert_eq!(ex("$$"), "$");
        assert_eq!(ex("a$b"), "a$b");
        assert_eq!(ex("cost: 5$"), "cost: 5$");
        assert_eq!(ex("$(unterminated"), "$(unterminated");
        assert_eq!(ex("€$€"), "€$€");
    }
}
