"""The model engine: two-level linear mixed models fitted by profiled REML/ML.

The stages follow lme4 (Bates et al. 2015), one module each:

- ``formula``: lme4-style formulas parsed by hand (never evaluated as Python);
- ``design``: y, X (fixed effects, treatment coding) and Z (random effects of
  one grouping factor), theta's positions in Lambda;
- ``stats``: per-person sufficient statistics in one pass, aggregated per time
  pattern; nothing after this step touches the rows again;
- ``deviance``: the profiled deviance / REML criterion and its exact gradient;
- ``optimize``: bounded L-BFGS-B + Newton polish, a second start after a boundary or failure, the boundary rule
  and an optimisation record;
- ``inference``: Satterthwaite degrees of freedom as lmerTest computes them;
- ``results``: the frozen :class:`GrowthFit` and its tidy tables;
- ``sm_engine``: statsmodels' MixedLM on the same design (second engine).

Glossary: theta (covariance parameters), Lambda (relative covariance factor,
``Var(b) = sigma^2 Lambda Lambda'``), beta (fixed effects), b and u (random
effects, ``b = Lambda u``), pwrss (penalised weighted residual sum of squares),
L (Cholesky factor of ``Lambda'Z'Z Lambda + I``), R_X (Cholesky factor of the
fixed-effects Schur complement), sigma (residual SD), REML criterion (-2 x the
REML log-likelihood), deviance (-2 x the log-likelihood).

Where the next pieces go:

- a third level (persons within sites): the statistics become per-site sums of
  per-person blocks; ``deviance.solve`` gains one more blocked Cholesky step
  (sites' ``Z'Z`` after the persons are absorbed), the optimiser and inference
  stay as they are, working on a longer theta;
- residual structures (AR(1), a variance per wave): the per-person statistics
  are then weighted by the inverse residual correlation ``R_i(rho)^{-1}``,
  which is shared by persons with the same time pattern, so they are computed
  per pattern as ``Z'R^{-1}Z`` etc. and rho joins theta in the optimiser.
"""
