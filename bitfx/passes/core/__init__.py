"""The pass infrastructure: the `Pass` base (`base`), layer selection (`selection`), the registry
(`registry`), the textual and TOML pipeline forms (`spec`, `config`), the `Pipeline` that runs
and checks passes (`pipeline`) and its instruments (`instruments`). `bitfx.passes` exports the
public names."""
