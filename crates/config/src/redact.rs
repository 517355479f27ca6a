//! [`redact_url`]: a URL fit for logs and messages.

const HIDDEN: &str = "***";

/// Query parameters whose value is hidden (compared without case; a name containing one of the
/// `*_PARTS` or equal to one of `EXACT`).
const SECRET_QUERY_PARTS: &[&str] = &[
    "password", "passwd", "secret", "token", "apikey", "api_key", "api-key",
];
const SECRET_QUERY_EXACT: &[&str] = &["pwd", "pass", "sig", "signature"];

/// The URL with its secrets replaced by `***`, for logs and messages:
///
/// - the password of the userinfo: `postgres://app:s3cret@db/x` → `postgres://app:***@db/x`
///   (the user name is kept; an empty password stays empty);
/// - the value of query parameters that name a secret (`password`, `passwd`, `pwd`, `pass`,
///   `secret`, `token`, `api_key`, `apikey`, `sig`, `signature`, and any name containing
///   `password`, `secret` or `token`, in any case): `?access_token=abc` → `?access_token=***`.
///
/// Everything else is kept byte for byte (no normalisation). Text that is not a URL is returned
/// unchanged, apart from its query part if it has one.
///
/// A password may hold characters a URL parser would stop at (`/`, `?`, `#`, `@`, unescaped):
/// it is taken to run to the **last** `@` of the text, so such a password is hidden whole
/// rather than printed in part. (A URL whose query or path also holds an `@` then shows less
/// than it could — never more: what follows that `@` is still read for secret parameters.)
pub fn redact_url(url: &str) -> String {
    let (mut out, rest, in_query) = split_userinfo(url);
    let (before_fragment, fragment) = match rest.find('#') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (before_query, query, mark) = match before_fragment.find('?') {
        Some(i) => (&before_fragment[..i], Some(&before_fragment[i + 1..]), "?"),
        // The hidden part ended inside a query: what is left of it is parameters.
        None if in_query => ("", Some(before_fragment), ""),
        None => (before_fragment, None, ""),
    };
    out.push_str(before_query);
    if let Some(query) = query {
        out.push_str(mark);
        let parts: Vec<String> = query.split('&').map(redact_query_pair).collect();
        out.push_str(&parts.join("&"));
    }
    out.push_str(fragment);
    out
}

/// `scheme://user:password@rest` → (`scheme://user:***@`, `rest`, whether the hidden part
/// held a `?`); without a password, (`""`, the whole text, `false`).
///
/// The user name runs to the first `:` after `://` and holds no `/`, `?` or `#`; the password
/// from there to the last `@`.
fn split_userinfo(url: &str) -> (String, &str, bool) {
    let whole = (String::new(), url, false);
    let Some(scheme_end) = url.find("://") else {
        return whole;
    };
    let start = scheme_end + 3;
    let after = &url[start..];
    let Some(colon) = after.find(':') else {
        return whole;
    };
    let user = &after[..colon];
    if user.contains(['/', '?', '#']) {
        return whole;
    }
    let Some(at) = after.rfind('@').filter(|&at| at > colon) else {
        return whole;
    };
    if at == colon + 1 {
        return whole; // `user:@host`: an empty password
    }
    (
        format!("{}{user}:{HIDDEN}@", &url[..start]),
        &url[start + at + 1..],
        after[colon + 1..at].contains('?'),
    )
}

fn redact_query_pair(pair: &str) -> String {
    let Some((name, value)) = pair.split_once('=') else {
        return pair.to_owned();
    };
    let lower = name.to_ascii_lowercase();
    let secret = SECRET_QUERY_EXACT.contains(&lower.as_str())
        || SECRET_QUERY_PARTS.iter().any(|p| lower.contains(p));
    if secret && !value.is_empty() {
        format!("{name}={HIDDEN}")
    } else {
        pair.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn hides_the_userinfo_password() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db.local:5432/state"),
            "postgres://app:***@db.local:5432/state"
        );
        assert_eq!(
            redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        // An unescaped `@` in the password.
        assert_eq!(
            redact_url("postgres://app:p@ss@db/x"),
            "postgres://app:***@db/x"
        );
        assert_eq!(redact_url("https://user:pw@host"), "https://user:***@host");
    }

    #[test]
    fn keeps_what_is_not_a_password() {
        for url in [
            "https://pim.example.com/api/rest/v1",
            "nats://127.0.0.1:4222",
            "postgres://app@db/x",
            "postgres://app:@db/x",
            "sqlite://assetbridge-state.db",
            "state.db",
            "https://host/path@with-at",
            "",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn hides_passwords_holding_url_delimiters() {
        for pw in [
            "ab/cd",
            "ab#cd",
            "ab?cd",
            "Zx/9#k",
            "a/b@c",
            "p@ss/w?d#x",
            "/",
            "#",
            "?",
        ] {
            for template in [
                "postgres://app:{pw}@db/x",
                "postgres://app:{pw}@db:5432/state?sslmode=require",
                "amqp://u:{pw}@h/v",
                "nats://u:{pw}@127.0.0.1:4222",
                "https://user:{pw}@host",
            ] {
                let url = template.replace("{pw}", pw);
                let shown = redact_url(&url);
                let expected = template.replace("{pw}", "***");
                assert_eq!(shown, expected, "{url}");
            }
        }
        // An `@` in the query: the host is hidden too, the parameters after it still read.
        let shown = redact_url("https://u:pw@h/x?mail=a@b&token=t");
        assert_eq!(shown, "https://u:***@b&token=***");
        let shown = redact_url("https://u:pw@h/x?mail=a@b&token=t#f");
        assert_eq!(shown, "https://u:***@b&token=***#f");
        // A user name with an `@`, a password with one.
        assert_eq!(
            redact_url("postgres://us@er:p@ss@db/x"),
            "postgres://us@er:***@db/x"
        );
        // A port and an `@` in the path: more than a password hidden, never less.
        assert!(!redact_url("https://host:8080/path@x").contains("8080/path"));
    }

    #[test]
    fn hides_secret_query_parameters() {
        assert_eq!(
            redact_url("https://h/x?page=2&access_token=abc&Password=p&flag#frag"),
            "https://h/x?page=2&access_token=***&Password=***&flag#frag"
        );
        assert_eq!(
            redact_url("postgres://u:pw@h/db?sslmode=require&sslpassword=k"),
            "postgres://u:***@h/db?sslmode=require&sslpassword=***"
        );
    }
}
