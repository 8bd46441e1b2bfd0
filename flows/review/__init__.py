"""The review page: look at a run's pairs, decide, export the decisions as gold pairs."""
