//! Plugins by name: factories registered under a name, one chosen by configuration.

use crate::rules::{CityDirectory, CountryPrefixDirectory, DefaultFlagger, KindOnlyFlagger};
use crate::{Error, Flagger, FlaggingConfig, Result};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Builds a flagger from the configuration.
pub type FlaggerFactory = Box<dyn Fn(&FlaggingConfig) -> Result<Arc<dyn Flagger>> + Send + Sync>;

/// Named flagger factories.
#[derive(Default)]
pub struct FlaggerRegistry {
    factories: BTreeMap<String, FlaggerFactory>,
}

impl std::fmt::Debug for FlaggerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlaggerRegistry")
            .field("names", &self.names())
            .finish()
    }
}

impl FlaggerRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// `"default"` ([`DefaultFlagger`] over a [`CountryPrefixDirectory`]) and `"kind-only"`.
    pub fn with_defaults() -> Self {
        Self::with_directory(Arc::new(CountryPrefixDirectory::default()))
    }

    /// The built-in plugins, `"default"` consulting `directory`.
    pub fn with_directory(directory: Arc<dyn CityDirectory>) -> Self {
        let mut r = Self::new();
        let dir = directory.clone();
        r.factories.insert(
            "default".to_string(),
            Box::new(move |c| {
                Ok(Arc::new(DefaultFlagger::new(c, dir.clone())?) as Arc<dyn Flagger>)
            }),
        );
        r.factories.insert(
            "kind-only".to_string(),
            Box::new(|c| Ok(Arc::new(KindOnlyFlagger::new(c)?) as Arc<dyn Flagger>)),
        );
        r
    }

    /// Registers a plugin; fails if the name is taken.
    pub fn register(&mut self, name: &str, factory: FlaggerFactory) -> Result<()> {
        if self.factories.contains_key(name) {
            return Err(Error::DuplicatePlugin(name.to_string()));
        }
        self.factories.insert(name.to_string(), factory);
        Ok(())
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.factories.keys().cloned().collect()
    }

    /// Builds the plugin `config.plugin` names.
    pub fn build(&self, config: &FlaggingConfig) -> Result<Arc<dyn Flagger>> {
        let factory = self
            .factories
            .get(&config.plugin)
            .ok_or_else(|| Error::UnknownPlugin {
                name: config.plugin.clone(),
                registered: self.names(),
            })?;
        factory(config)
    }
}
