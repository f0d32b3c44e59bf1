//! NATS credentials: a `.creds` file (JWT + nkey, the decentralized auth of
//! NATS accounts), an nkey seed, a token, or a user and password. Besides
//! the URL form (`nats://user:pass@host`), so a secret need not sit in a URL
//! that ends up in a process list or a shell history. One of them at most.

use async_nats::ConnectOptions;

use super::BusError;
use crate::config::BusConfig;

/// `options` with the credentials `config` names, or why they are unusable.
pub async fn apply(
    options: ConnectOptions,
    config: &BusConfig,
) -> Result<ConnectOptions, BusError> {
    let given = [
        config.creds_file.is_some(),
        !config.nkey_seed.is_empty(),
        !config.token.is_empty(),
        !config.user.is_empty(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(BusError::Credentials(
            "give one of bus.creds_file, bus.nkey_seed, bus.token, bus.user/password".into(),
        ));
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
