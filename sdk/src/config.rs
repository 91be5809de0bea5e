//! Configuration values over `wasi:config/store@0.2.0-rc.1`.
//!
//! In a pod the values come from the app's manifest (`[config]`) or `dabba serve --config`.
//! Natively they come from environment variables named `DABBA_CONFIG_<KEY>`, with the key
//! upper-cased and every character that is not a letter or digit replaced by `_`
//! (`mdr_rules` → `DABBA_CONFIG_MDR_RULES`): the natural way to configure a container.

/// Why configuration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration unavailable: {0}")]
pub struct ConfigError(pub String);

/// The value of `key`, or `None` when it was not given.
pub fn get(key: &str) -> Result<Option<String>, ConfigError> {
    imp::get(key)
}

/// Every value given to this component.
pub fn get_all() -> Result<Vec<(String, String)>, ConfigError> {
    imp::get_all()
}

/// The environment variable that holds `key` in a native build.
pub fn native_env_name(key: &str) -> String {
    let mut name = String::from("DABBA_CONFIG_");
    name.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    name
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::{ConfigError, native_env_name};

    pub fn get(key: &str) -> Result<Option<String>, ConfigError> {
        Ok(std::env::var(native_env_name(key)).ok())
    }

    pub fn get_all() -> Result<Vec<(String, String)>, ConfigError> {
        Ok(std::env::vars()
            .filter_map(|(k, v)| {
                k.strip_prefix("DABBA_CONFIG_")
                    .map(|key| (key.to_ascii_lowercase(), v))
            })
            .collect())
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::ConfigError;
    use crate::bindings::wasi::config::store;

    fn convert(e: store::Error) -> ConfigError {
        match e {
            store::Error::Upstream(m) | store::Error::Io(m) => ConfigError(m),
        }
    }

    pub fn get(key: &str) -> Result<Option<String>, ConfigError> {
        store::get(key).map_err(convert)
    }

    pub fn get_all() -> Result<Vec<(String, String)>, ConfigError> {
        store::get_all().map_err(convert)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn native_names_are_upper_snake() {
        assert_eq!(
            super::native_env_name("mdr_rules"),
            "DABBA_CONFIG_MDR_RULES"
        );
        assert_eq!(super::native_env_name("a.b-c"), "DABBA_CONFIG_A_B_C");
    }
}
