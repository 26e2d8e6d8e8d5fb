"""galpipe: galaxy morphology across surveys with few labels (SDSS -> DES transfer learning),
as Dagster assets. The science code lives in plain modules; Dagster wiring in galpipe.defs."""
