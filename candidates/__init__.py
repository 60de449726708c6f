"""Candidate sources: each proposes items for a batch of requests, behind one interface.

A source takes a :class:`candidates.sources.Query` (the batch's recent items, request times,
user-tower vectors and banned rows, as arrays of catalog rows) and returns each request's
best ``n`` rows with its own scores. The same objects run in the server and in the offline
walk (:mod:`evaluation.candidates`), so what a ranker is trained on is what it is served.
"""
