//! Error texts without URLs. reqwest (and the libraries under it) put the whole URL of a
//! request in an error's text, and a URL can be a credential: a Slack webhook's path is its
//! secret, a provider's output link is signed, a client's image link may carry a token or a
//! password. Every error from an outbound call that is logged or stored goes through
//! [`error_text`] (or [`redact_urls`]), which keeps each URL's scheme and host, enough to say
//! where a call went, and drops everything after them.

/// `err` and its sources joined by `": "`, as `{:#}` shows an `anyhow` chain, with every URL in
/// it cut down to its scheme and host (see [`redact_urls`]).
pub fn error_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let part = s.to_string();
        // reqwest repeats its inner error's text in its own; say each thing once.
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    redact_urls(&text)
}

/// `text` with every URL (`scheme://…`, up to the next blank, quote or closing bracket) cut
/// down to `scheme://host[:port]/…`: user names and passwords, paths, queries and fragments
/// are dropped, since any of them can be a secret.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let scheme_start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| {
                i + rest[i..].chars().next().map_or(1, char::len_utf8)
            });
        let scheme = &rest[scheme_start..at];
        if scheme.is_empty() || !scheme.starts_with(|c: char| c.is_ascii_alphabetic()) {
            // Not a URL (`://` on its own): keep it and look further.
            out.push_str(&rest[..at + 3]);
            rest = &rest[at + 3..];
            continue;
        }
        out.push_str(&rest[..scheme_start]);
        let after = &rest[at + 3..];
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | '>' | ']' | '`'))
            .unwrap_or(after.len());
        let url = &after[..end];
        let authority = &url[..url.find(['/', '?', '#']).unwrap_or(url.len())];
        // A user name or password comes before the last `@` of the authority.
        let host = authority.rsplit('@').next().unwrap_or("");
        out.push_str(scheme);
        out.push_str("://");
        out.push_str(host);
        if authority.len() < url.len() || authority.contains('@') {
            out.push_str("/…");
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_their_scheme_and_host_only() {
        let cases = [
            (
                "error sending request for url (https://hooks.slack.com/services/T0/B0/XyZsecret)",
                "error sending request for url (https://hooks.slack.com/…)",
            ),
            (
                "HTTP status server error (500 Internal Server Error) for url (http://127.0.0.1:9/hook?token=abc)",
                "HTTP status server error (500 Internal Server Error) for url (http://127.0.0.1:9/…)",
            ),
            (
                "cannot reach postgres://aiprod:pa55@10.0.0.5:5432/aiprod now",
                "cannot reach postgres://10.0.0.5:5432/… now",
            ),
            ("see https://example.com", "see https://example.com"),
            (
                "two: \"https://a.example/x#f\" and 'gs://bucket/obj'",
                "two: \"https://a.example/…\" and 'gs://bucket/…'",
            ),
            ("a bare :// stays", "a bare :// stays"),
            ("no url at all", "no url at all"),
            ("après…https://x.example/p", "après…https://x.example/…"),
        ];
        for (text, want) in cases {
            assert_eq!(redact_urls(text), want, "{text}");
        }
    }

    #[test]
    fn an_error_chain_is_one_line_without_its_urls() {
        #[derive(Debug)]
        struct Inner;
        impl std::fmt::Display for Inner {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("connection refused")
            }
        }
        impl std::error::Error for Inner {}
        #[derive(Debug)]
        struct Outer(Inner);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error sending request for url (https://h.example/s3cret)")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert_eq!(
            error_text(&Outer(Inner)),
            "error sending request for url (https://h.example/…): connection refused"
        );
    }
}
