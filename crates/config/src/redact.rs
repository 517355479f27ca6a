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
pub fn redact_url(url: &str) -> String {
    let (before_fragment, fragment) = match url.find('#') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let (before_query, query) = match before_fragment.find('?') {
        Some(i) => (&before_fragment[..i], Some(&before_fragment[i + 1..])),
        None => (before_fragment, None),
    };
    let mut out = redact_userinfo(before_query);
    if let Some(query) = query {
        out.push('?');
        let parts: Vec<String> = query.split('&').map(redact_query_pair).collect();
        out.push_str(&parts.join("&"));
    }
    out.push_str(fragment);
    out
}

/// `scheme://user:password@host/path` → `scheme://user:***@host/path`.
fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find('/')
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    // The last `@` ends the userinfo (an unescaped `@` in a password is common enough).
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    if colon + 1 == userinfo.len() {
        return url.to_owned();
    }
    format!(
        "{}{}:{HIDDEN}{}",
        &url[..authority_start],
        &userinfo[..colon],
        &url[authority_start + at..]
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
