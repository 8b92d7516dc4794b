# Regenerates clusters_reference.json: lme4/lmerTest values for the three-level
# analyses of pipeline/analysis/clusters.py on egsingle.csv (pupils childid in schools
# schoolid; written by make_nested_reference.R). Run from this folder:
#   Rscript make_clusters_reference.R
# Needs lme4, lmerTest, jsonlite.
suppressPackageStartupMessages({library(lme4); library(lmerTest); library(jsonlite)})
eg <- read.csv("egsingle.csv")
eg$schoolid <- factor(eg$schoolid)
eg$childid <- factor(eg$childid)
ctl <- lmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5))

vc <- function(fit) { v <- as.data.frame(VarCorr(fit)); v }
ivar <- function(fit, grp, term = "(Intercept)") {
  v <- vc(fit); v$vcov[v$grp == grp & v$var1 == term & is.na(v$var2)]
}

# unconditional means model: the variance partition and the ICCs
m3 <- lmer(math ~ 1 + (1 | schoolid) + (1 | schoolid:childid), eg, REML = TRUE, control = ctl)
m2 <- lmer(math ~ 1 + (1 | schoolid:childid), eg, REML = TRUE, control = ctl)
tau_c <- ivar(m3, "schoolid"); tau_p <- ivar(m3, "schoolid:childid"); s2 <- sigma(m3)^2
total <- tau_c + tau_p + s2
means <- list(
  variance = c(tau_p, tau_c, s2), share = c(tau_p, tau_c, s2) / total,
  icc_cluster = tau_c / total, icc_person = (tau_p + tau_c) / total,
  share_between_persons = tau_c / (tau_p + tau_c))

# LRT of the school variance (ML refits, as anova() does); chisq and the mixture p
a_means <- anova(m2, m3, refit = TRUE)
lrt_means <- list(chisq = a_means$Chisq[2], df = a_means$Df[2],
  p_mixture = 0.5 * pchisq(a_means$Chisq[2], 1, lower.tail = FALSE))

# design effect (the formulas of clusters.py from the lme4 variances and the counts)
n_obs <- nrow(eg); n_p <- nlevels(eg$childid); n_c <- nlevels(eg$schoolid)
nbar <- n_obs / n_p; Nbar <- n_obs / n_c; mbar <- n_p / n_c
deff_obs <- 1 + (nbar - 1) * (tau_p + tau_c) / total + (Nbar - nbar) * tau_c / total
icc_means <- tau_c / (tau_c + tau_p + s2 / nbar)
deff_persons <- 1 + (mbar - 1) * icc_means
design <- list(deff_observations = deff_obs, deff_persons = deff_persons,
  icc_person_means = icc_means, effective_observations = n_obs / deff_obs,
  effective_persons = n_p / deff_persons)

# reliability of person and school means (Raudenbush & Bryk eq. 8.7-8.8), averaged
n_i <- as.vector(table(eg$childid))
lam_p <- mean(tau_p / (tau_p + s2 / n_i))
school_of_child <- tapply(as.character(eg$schoolid), eg$childid, function(x) x[1])
N_j <- as.vector(table(eg$schoolid))
sumsq <- tapply(n_i^2, factor(school_of_child, levels = levels(eg$schoolid)), sum)
lam_c <- mean(tau_c / (tau_c + tau_p * as.vector(sumsq) / N_j^2 + s2 / N_j))

# unconditional growth model: variances within and between schools; LRT; reliability
g3 <- lmer(math ~ year + (year | schoolid) + (year | schoolid:childid), eg, REML = TRUE,
  control = ctl)
g2 <- lmer(math ~ year + (year | schoolid:childid), eg, REML = TRUE, control = ctl)
a_growth <- anova(g2, g3, refit = TRUE)
re <- ranef(g3, condVar = TRUE)
eb_rel <- function(grp) {
  pv <- attr(re[[grp]], "postVar")
  terms <- colnames(re[[grp]])
  sapply(seq_along(terms), function(a) mean(1 - pv[a, a, ] / ivar(g3, grp, terms[a])))
}
school_re <- re$schoolid
first <- head(rownames(school_re), 5)
growth <- list(
  within = c(ivar(g3, "schoolid:childid"), ivar(g3, "schoolid:childid", "year")),
  between = c(ivar(g3, "schoolid"), ivar(g3, "schoolid", "year")),
  lrt_chisq = a_growth$Chisq[2], lrt_df = a_growth$Df[2],
  reliability_person = eb_rel("schoolid:childid"), reliability_school = eb_rel("schoolid"),
  school_labels = first,
  school_intercept = school_re[first, "(Intercept)"], school_slope = school_re[first, "year"],
  school_condvar_intercept = attr(school_re, "postVar")[1, 1, 1:5],
  school_condvar_slope = attr(school_re, "postVar")[2, 2, 1:5])

# the standard error of the school-level predictor lowinc: OLS, two-level, three-level
c3 <- lmer(math ~ year * (female + lowinc) + (year | schoolid) + (year | schoolid:childid),
  eg, REML = TRUE, control = ctl)
c2 <- lmer(math ~ year * (female + lowinc) + (year | schoolid:childid), eg, REML = TRUE,
  control = ctl)
ols <- lm(math ~ year * (female + lowinc), eg)
se <- function(fit, term) sqrt(diag(as.matrix(vcov(fit))))[term]
est <- function(fit, term) if (inherits(fit, "lm")) coef(fit)[term] else fixef(fit)[term]
terms <- c("lowinc", "year:lowinc")
predictor <- list(terms = terms,
  ols_estimate = unname(sapply(terms, function(t) est(ols, t))),
  ols_se = unname(sapply(terms, function(t) se(ols, t))),
  two_estimate = unname(sapply(terms, function(t) est(c2, t))),
  two_se = unname(sapply(terms, function(t) se(c2, t))),
  three_estimate = unname(sapply(terms, function(t) est(c3, t))),
  three_se = unname(sapply(terms, function(t) se(c3, t))))

out <- list(
  lme4 = as.character(packageVersion("lme4")),
  means = means, lrt_means = lrt_means, design = design,
  reliability_means = list(person = lam_p, school = lam_c),
  growth = growth, predictor = predictor)
write(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "clusters_reference.json")
