# Reference values for tests/test_analysis_*.py (pipeline/analysis): run from this folder with
#   Rscript make_analysis_reference.R
# Writes analysis_reference.json. Needs lme4, lmerTest, clubSandwich, jsonlite.
suppressPackageStartupMessages({
  library(lme4)
  library(clubSandwich)
  library(jsonlite)
})

early <- read.csv("early.csv", colClasses = c(id = "character", trt = "character"))
sleep <- read.csv("sleepstudy.csv")
sleep$Subject <- as.character(sleep$Subject)
out <- list(versions = list(
  R = paste(R.version$major, R.version$minor, sep = "."),
  lme4 = as.character(packageVersion("lme4")),
  clubSandwich = as.character(packageVersion("clubSandwich"))
))

# ICC of the unconditional means model: REML estimate and the REML profile interval of
# theta (relative SD), from lme4's own REML criterion as a function of theta
means <- lmer(cog ~ 1 + (1 | id), data = early, REML = TRUE)
dev <- lmer(cog ~ 1 + (1 | id), data = early, REML = TRUE, devFunOnly = TRUE)
theta_hat <- getME(means, "theta")[[1]]
d_min <- dev(theta_hat)
crit <- qchisq(0.95, 1)
f <- function(t) dev(t) - d_min - crit
low <- if (f(0) <= 0) 0 else uniroot(f, c(0, theta_hat), tol = 1e-12)$root
high <- uniroot(f, c(theta_hat, 100 * theta_hat), tol = 1e-12)$root
out$icc_means <- list(
  theta = theta_hat, reml_criterion = d_min, theta_low = low, theta_high = high,
  icc = theta_hat^2 / (1 + theta_hat^2), icc_low = low^2 / (1 + low^2), icc_high = high^2 / (1 + high^2),
  criterion_at_0 = dev(0), criterion_at_1 = dev(1)
)

# time's share of the within-person variance: two random-intercept models (REML)
ri <- lmer(cog ~ age1 + (1 | id), data = early, REML = TRUE)
out$pseudo_r2_time <- list(
  sigma2_means = sigma(means)^2, sigma2_random_intercept_growth = sigma(ri)^2,
  proportion = (sigma(means)^2 - sigma(ri)^2) / sigma(means)^2
)

# likelihood-ratio statistics (anova refits by ML)
growth <- lmer(cog ~ age1 + (age1 | id), data = early, REML = TRUE)
cond <- lmer(cog ~ age1 * trt + (age1 | id), data = early, REML = TRUE)
uncor <- lmer(cog ~ age1 * trt + (age1 || id), data = early, REML = TRUE)
a1 <- anova(ri, growth, refit = TRUE)
a2 <- anova(uncor, cond, refit = TRUE)
out$lrt <- list(
  random_slope = list(chisq = a1$Chisq[2], df = a1$Df[2], p_chi2 = a1$`Pr(>Chisq)`[2],
                      p_mixture = 0.5 * pchisq(a1$Chisq[2], 1, lower.tail = FALSE) +
                                  0.5 * pchisq(a1$Chisq[2], 2, lower.tail = FALSE)),
  covariance = list(chisq = a2$Chisq[2], df = a2$Df[2], p = a2$`Pr(>Chisq)`[2])
)

# OLS with CR1S and CR2 cluster-robust SEs (Bell-McCaffrey / Satterthwaite df)
robust <- function(fit, cluster) {
  cr2 <- coef_test(fit, vcov = "CR2", cluster = cluster, test = "Satterthwaite")
  cr1 <- coef_test(fit, vcov = "CR1S", cluster = cluster, test = "naive-t")
  list(term = names(coef(fit)), se_cr2 = cr2$SE, df_cr2 = cr2$df_Satt, p_cr2 = cr2$p_Satt,
       se_cr1 = cr1$SE)
}
out$ols_early <- robust(lm(cog ~ age1 * trt, data = early), early$id)
out$ols_sleep <- robust(lm(Reaction ~ Days, data = sleep), sleep$Subject)

write(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "analysis_reference.json")
