"""The classification use case, no HTTP: `service.classify` (limits -> access -> versions ->
admission -> the Classifier -> renaming), called with plain values by every protocol of app.api.
The engine is reached only through `classifier.Classifier`; answers are rendered per task by
adapters_store.rendering."""
