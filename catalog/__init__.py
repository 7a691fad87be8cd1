"""The catalog: models, state machines, the one transition path, site config, migrations."""
