"""One module per noun: thin routes over the store, each behind `auth.need(role)`."""
