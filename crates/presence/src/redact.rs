//! Secrets out of logs and printed configs: [`redact_uri`], the one place a Redis URI's
//! password is hidden (presence-server's start-up log, `city-node config print`).

/// The URI with its password replaced by `***`: `redis://user:pw@h:p` →
/// `redis://user:***@h:p`; a lone userinfo (`redis://pw@h:p`, Redis's password-only form)
/// → `redis://***@h:p`. Works for `rediss://`, `redis+cluster://` and `redis+sentinel://`
/// lists of hosts too; a URI without credentials is returned as is.
pub fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return uri.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None if userinfo.is_empty() => uri.to_string(),
        // A lone userinfo in a Redis URI is the password.
        None => format!("{scheme}://***@{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_and_the_rest_kept() {
        for (uri, shown) in [
            (
                "redis://u:hunter2@10.0.0.1:6379",
                "redis://u:***@10.0.0.1:6379",
            ),
            ("redis://:hunter2@h:1/0", "redis://:***@h:1/0"),
            ("redis://hunter2@h:1", "redis://***@h:1"),
            ("rediss://app:p@ss@h:6380", "rediss://app:***@h:6380"),
            (
                "redis+cluster://:pw@a:1,b:2,c:3",
                "redis+cluster://:***@a:1,b:2,c:3",
            ),
            ("redis://10.0.0.1:6379", "redis://10.0.0.1:6379"),
            ("redis://@h:1", "redis://@h:1"),
            ("not a uri", "not a uri"),
        ] {
            let r = redact_uri(uri);
            assert_eq!(r, shown, "{uri}");
            assert!(!r.contains("hunter2") && !r.contains("pw@"), "{r}");
        }
    }
}
