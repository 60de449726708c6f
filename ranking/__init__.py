"""The second stage: the union of the candidate sources' lists, each candidate's
point-in-time features, and a gradient-boosted ranker over them.

The features are computed from what a request carries (:class:`candidates.sources.Query`),
what the stream keeps about items (:class:`ranking.features.ItemState`) and what a version
holds about its catalog (:class:`ranking.features.Catalog`), by the same code offline and
served, so a ranker is trained on exactly what it will be asked.
"""
