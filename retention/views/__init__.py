"""The retention desk's pages, one module per page: feed (the Live Feed and the partner list),
partner, intervention_log, outcomes, import_page."""
