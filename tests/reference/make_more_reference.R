# Regenerates lme4_more_reference.json and the four CSVs it refers to
# (orthodont.csv, oxboys.csv, chickweight.csv, bodyweight.csv) from data sets
# shipped with R (nlme, datasets); run from this folder: Rscript make_more_reference.R
# Needs lme4, lmerTest, nlme, jsonlite (Debian: r-cran-lme4 r-cran-lmertest r-cran-nlme r-cran-jsonlite).
suppressPackageStartupMessages({library(lme4); library(lmerTest); library(jsonlite); library(nlme)})

# nlme's grouping factors are *ordered* factors in plot order (e.g. "M16" < "M05" < ...),
# and Sex is Male/Female: write every categorical column as plain character so that
# both lme4 (character -> factor with sorted levels) and the engine (String -> sorted
# levels, reference = first) use the same level order and the same reference category.
export <- function(d, cols, char, file) {
  d <- as.data.frame(d)[, cols]
  for (v in char) d[[v]] <- as.character(d[[v]])
  write.csv(d, file, row.names = FALSE)
}
datasets <- list(
  orthodont = list(file = "orthodont.csv", character = c("Subject", "Sex")),
  oxboys = list(file = "oxboys.csv", character = c("Subject", "Occasion")),
  chickweight = list(file = "chickweight.csv", character = c("Chick", "Diet")),
  bodyweight = list(file = "bodyweight.csv", character = c("Rat", "Diet")))
export(nlme::Orthodont, c("Subject", "Sex", "age", "distance"), c("Subject", "Sex"), "orthodont.csv")
export(nlme::Oxboys, c("Subject", "Occasion", "age", "height"), c("Subject", "Occasion"), "oxboys.csv")
export(datasets::ChickWeight, c("Chick", "Diet", "Time", "weight"), c("Chick", "Diet"), "chickweight.csv")
export(nlme::BodyWeight, c("Rat", "Diet", "Time", "weight"), c("Rat", "Diet"), "bodyweight.csv")
# fit on the CSVs as written (the engine reads exactly these)
dat <- lapply(datasets, function(s) {
  cc <- setNames(rep("character", length(s$character)), s$character)
  read.csv(s$file, colClasses = cc)
})

models <- list(
  orthodont_null = list(data = "orthodont", formula = "distance ~ 1 + (1|Subject)"),
  orthodont_intercept = list(data = "orthodont", formula = "distance ~ age * Sex + (1|Subject)"),
  orthodont_slope = list(data = "orthodont", formula = "distance ~ age * Sex + (age|Subject)"),
  orthodont_uncorrelated = list(data = "orthodont", formula = "distance ~ age * Sex + (age||Subject)"),
  orthodont_slope_only = list(data = "orthodont", formula = "distance ~ age * Sex + (0 + age|Subject)"),
  oxboys_quadratic = list(data = "oxboys", formula = "height ~ age + I(age^2) + (age|Subject)"),
  oxboys_quadratic_full = list(data = "oxboys", formula = "height ~ age + I(age^2) + (age + I(age^2)|Subject)"),
  oxboys_quadratic_uncorrelated = list(data = "oxboys", formula = "height ~ age + I(age^2) + (age + I(age^2)||Subject)"),
  chickweight_intercept = list(data = "chickweight", formula = "weight ~ Time * Diet + (1|Chick)"),
  chickweight_diet = list(data = "chickweight", formula = "weight ~ Time * Diet + (Time|Chick)"),
  chickweight_quadratic_singular = list(data = "chickweight", formula = "weight ~ Time + I(Time^2) + (Time + I(Time^2)|Chick)"),
  bodyweight_diet = list(data = "bodyweight", formula = "weight ~ Time * Diet + (Time|Rat)"),
  bodyweight_uncorrelated = list(data = "bodyweight", formula = "weight ~ Time * Diet + (Time||Rat)"))

# named by term even when there is only one (co[, j] drops the names of a 1-row matrix)
col <- function(co, j) setNames(as.list(co[, j]), rownames(co))
out <- list()
for (name in names(models)) for (reml in c(TRUE, FALSE)) {
  m <- models[[name]]; d <- dat[[m$data]]
  warn <- character()
  fit <- withCallingHandlers(
    lmerTest::lmer(as.formula(m$formula), data = d, REML = reml),
    warning = function(w) {warn <<- c(warn, conditionMessage(w)); invokeRestart("muffleWarning")})
  co <- summary(fit)$coefficients
  vc <- as.data.frame(VarCorr(fit))
  grp <- names(ngrps(fit))[1]
  re <- ranef(fit, condVar = TRUE)[[grp]]
  cv <- attr(re, "postVar")
  # (x || g) splits the term: lme4 then gives one postVar array per term, i.e. only
  # the diagonal of each group's conditional covariance (no cross-term covariances)
  diag_only <- is.list(cv)
  condvar <- if (diag_only) function(i) vapply(cv, function(a) a[1, 1, i], 0) else function(i) as.vector(cv[, , i])
  out[[paste0(name, if (reml) "_reml" else "_ml")]] <- list(
    name = name, data = m$data, formula = m$formula, REML = reml,
    fixef = as.list(fixef(fit)), se = col(co, "Std. Error"),
    df_satterthwaite = col(co, "df"), p_satterthwaite = col(co, "Pr(>|t|)"),
    varcorr = lapply(seq_len(nrow(vc)), function(i) list(grp = vc$grp[i], var1 = vc$var1[i],
      var2 = vc$var2[i], vcov = vc$vcov[i], sdcor = vc$sdcor[i])),
    sigma = sigma(fit), logLik = as.numeric(logLik(fit)), AIC = AIC(fit), BIC = BIC(fit),
    deviance_or_REMLcrit = if (reml) REMLcrit(fit) else deviance(fit),
    nobs = nobs(fit), ngroups = as.list(ngrps(fit)), singular = isSingular(fit), ranef_group = grp,
    ranef_first5 = lapply(1:5, function(i) c(list(id = rownames(re)[i]), as.list(re[i, , drop = FALSE]))),
    ranef_condvar_first5 = lapply(1:5, condvar), ranef_condvar_diagonal_only = diag_only,
    # extras for diagnosis: lme4's theta (Lambda's lower triangle, column-wise, per term),
    # its convergence messages and the warnings lmer() raised
    theta = unname(getME(fit, "theta")),
    lme4_messages = as.list(fit@optinfo$conv$lme4$messages), warnings = as.list(warn))
}
small <- lmer(distance ~ age + (age|Subject), data = dat$orthodont)
big <- lmer(distance ~ age * Sex + (age|Subject), data = dat$orthodont)
a <- anova(small, big)
out$lrt <- list(orthodont_sex_vs_growth = list(data = "orthodont", small = "distance ~ age + (age|Subject)",
  big = "distance ~ age * Sex + (age|Subject)", chisq = a$Chisq[2], df = a$Df[2], p = a[["Pr(>Chisq)"]][2],
  logLik_small = as.numeric(logLik(refitML(small))), logLik_big = as.numeric(logLik(refitML(big)))))
out$datasets <- datasets
out$versions <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
  lmerTest = as.character(packageVersion("lmerTest")), nlme = as.character(packageVersion("nlme")),
  Matrix = as.character(packageVersion("Matrix")))
write(toJSON(out, auto_unbox = TRUE, digits = NA, null = "null", na = "null", pretty = TRUE), "lme4_more_reference.json")
