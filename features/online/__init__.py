"""The serving read: users' features from the online store, per batch, bounded in time."""
