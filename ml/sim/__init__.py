"""The simulated partner world: the pure simulator (`simulator`), its database glue
(`store`: seeding the tables, the hidden state file), and its clock (`clock`: the desk's
today, advancing the world). Production ML code (features, model, scoring) lives in `ml/`
and reads the database only; it asks `clock` what day it is."""
