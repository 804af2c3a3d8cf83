"""The `dtrain` command line: starting ranks from YAML experiment configs."""
