//! NATS credentials: a `.creds` file (JWT + nkey, the decentralized auth of
//! NATS accounts), an nkey seed, a token, or a user and password. Besides
//! the URL form (`nats://user:pass@host`), so a secret need not sit in a URL
//! that ends up in a process list or a shell history. One of them at most.

use async_nats::ConnectOptions;

use super::BusError;
use crate::config::BusConfig;

/// `options` with the credentials `config` names (or `url` carries), or
/// why they are unusable.
pub async fn apply(
    options: ConnectOptions,
    config: &BusConfig,
    url: &str,
) -> Result<ConnectOptions, BusError> {
    let in_url = url_login(url);
    let given = [
        config.creds_file.is_some(),
        !config.nkey_seed.is_empty(),
        !config.token.is_empty(),
        !config.user.is_empty(),
        in_url.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(BusError::Credentials(
            "give one of bus.creds_file, bus.nkey_seed, bus.token, bus.user/password, or a login in the URL".into(),
        ));
    }
    // async-nats does not send the login a URL carries: pass it on.
    match in_url {
        Some((user, Some(password))) => return Ok(options.user_and_password(user, password)),
        Some((token, None)) => return Ok(options.token(token)),
        None => {}
    }
    if let Some(path) = &config.creds_file {
        return options
            .credentials_file(path)
            .await
            .map_err(|e| BusError::Credentials(format!("{}: {e}", path.display())));
    }
    if !config.nkey_seed.is_empty() {
        return Ok(options.nkey(config.nkey_seed.clone()));
    }
    if !config.token.is_empty() {
        return Ok(options.token(config.token.clone()));
    }
    if !config.user.is_empty() {
        return Ok(options.user_and_password(config.user.clone(), config.password.clone()));
    }
    Ok(options)
}

/// The `user[:password]` of a `nats://user:password@host` URL, percent-decoded.
fn url_login(url: &str) -> Option<(String, Option<String>)> {
    let addr: async_nats::ServerAddr = url.split(',').next()?.trim().parse().ok()?;
    let user = decode(addr.username()?);
    Some((user, addr.password().map(decode)))
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_in_the_url_is_read() {
        let cases = [
            ("nats://127.0.0.1:4222", None),
            (
                "nats://alice:s3cret@127.0.0.1:4222",
                Some(("alice", Some("s3cret"))),
            ),
            ("nats://a-b:p%40ss%3Aw@host", Some(("a-b", Some("p@ss:w")))),
            ("nats://tok3n@host:4222", Some(("tok3n", None))),
            ("nats://u:p@h1:4222,nats://h2:4222", Some(("u", Some("p")))),
        ];
        for (url, want) in cases {
            let got = url_login(url);
            let want = want.map(|(u, p)| (u.to_string(), p.map(str::to_string)));
            assert_eq!(got, want, "{url}");
        }
    }

    #[tokio::test]
    async fn a_url_login_and_another_are_refused() {
        let config = BusConfig {
            user: "bob".into(),
            ..BusConfig::default()
        };
        let r = apply(ConnectOptions::new(), &config, "nats://alice:pw@host").await;
        assert!(matches!(r, Err(BusError::Credentials(_))));
    }
}
