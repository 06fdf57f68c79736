"""ilma controller: the site model, the pure control core and the central service."""
