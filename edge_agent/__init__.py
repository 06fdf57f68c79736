"""ilma edge agent: the daemon on a building gateway."""
