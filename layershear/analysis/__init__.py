"""Analysis: statistics comparing block metrics, the analyze job, plots and the HTML/JSON report."""
