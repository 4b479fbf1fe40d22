"""LightningModules: they own losses, metrics and optimisation; the networks they wrap are plain nn.Modules."""
