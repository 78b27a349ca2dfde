"""The simulated partner world: the pure simulator (`simulator`), its database glue
(`store`: seeding the tables, the hidden state file), its clock (`clock`: simulate_days) and
the desk's today (`today`). Production ML code (features, model, scoring) lives in `ml/`,
reads the database only, and asks `today` what day it is."""
