"""The one method table: what each evaluation row is, for the fit's evaluation
(``training.evaluate_core``), ``training.evaluate`` and the reports. No heavy imports."""

from __future__ import annotations

#: Rows of the end-of-fit evaluation, in order.
METHODS = ("model", "model+best_of_k", "model+proxy_search", "model+proxy_refine", "mean_preset",
           "nearest_neighbour")
#: Methods that render through the synth's differentiable proxy (unavailable without one).
PROXY_METHODS = ("model+best_of_k", "model+proxy_search", "model+proxy_refine", "model+refine")
#: What each evaluation row is: the one method table of the fit's evaluation (``summary.json``'s
#: ``eval_methods``) and of ``training.evaluate``.
METHOD_NOTES = {
    "model": "the network's prediction alone (no renders)",
    "model+refine": "prediction, then gradient descent through the proxy; best real-engine re-render of a few "
                    "snapshots (prediction included)",
    "model+search": "prediction, then CMA-ES through the real engine",
    "model+best_of_k": "the network's eval.best_of_k candidate presets (its many answers; training.heads."
                       "candidate_presets) ranked by their proxy render's distance to the target: k proxy renders "
                       "per target, no real-engine render",
    "model+proxy_search": "model+best_of_k's candidates and the presets of the eval.lookup_candidates nearest "
                          "gallery sounds ranked by the proxy, the best improved through the proxy alone "
                          "(training.proxy_search: eval.proxy_search_rounds x eval.proxy_search_candidates more proxy "
                          "renders per target; no real-engine render)",
    "model+proxy_refine": "model+proxy_search's start (the pick of model+best_of_k's candidates and the "
                          "eval.lookup_candidates nearest gallery sounds' presets, ranked by the proxy), then "
                          "eval.proxy_refine_steps Adam steps through the proxy on the continuous parameters "
                          "(categoricals held), each target keeping the point of least proxy distance "
                          "(training.refine.ProxyRefiner.descend: steps + 1 proxy renders with gradient per target "
                          "more; no real-engine render)",
    "mean_preset": "mean training preset (most frequent choice of each categorical)",
    "random_preset": "a random preset from the synth's sampling prior",
    "nearest_neighbour": "training preset whose real-engine render at the target's note is nearest in log-mel "
                         "(Euclidean; with data.note_range the training presets are rendered again at data.note)",
    "param_only": "a run trained with the parameter loss only",
    "cma_mean": "CMA-ES through the real engine from the mean preset",
}
