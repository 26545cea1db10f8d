"""One module per screen: report, feature, probe, registry, and the help screen."""
