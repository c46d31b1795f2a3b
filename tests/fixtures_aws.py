"""moto server fixture (filled in by the AWS backend work)."""
